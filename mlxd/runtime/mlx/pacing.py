"""How big an embedding batch may be while sequences decode: the worker's decode clock and
each model's pacer, so a burst of embeddings slows streams down instead of freezing them.
"""

from __future__ import annotations

#: Tokens of one embedding batch while no sequence of the model decodes (nobody waits on
#: its step, so a burst runs in as few batches as this allows).
IDLE_EMBED_TOKENS = 8192


class Pacer:
    """Sizes a model's embedding batches while sequences decode on the worker (this model's
    or another's): each takes about one decode step's time (so a stream's gap between tokens
    at most doubles), never more than ``cap`` tokens (one prefill step). The step's time is
    the worker's (``DecodeClock``); the time per embedded token is this model's own.

    That time per token is a batch's whole time over its tokens, fixed cost of the forward
    pass included, so sizing by it converges on the batch that does fit one step (fixed
    cost + tokens x per-token cost = step) rather than overshooting it. Where the fixed
    cost alone is about a step (a tiny model on a CPU) that is one token a batch: the
    smallest unit of work, so embeddings still advance while the stream keeps its pace."""

    MIN_TOKENS = 1

    def __init__(self) -> None:
        self._per_token: float | None = None

    def budget(self, decoding: bool, step: float | None, cap: int, idle: int) -> int:
        """Tokens (padding included) for the next embedding batch."""
        if not decoding:
            return max(idle, cap)
        if self._per_token is None or step is None:
            return self.MIN_TOKENS
        return max(self.MIN_TOKENS, min(cap, int(step / self._per_token)))

    def embedded(self, tokens: int, seconds: float) -> None:
        """One embedding batch of ``tokens`` took ``seconds``."""
        if tokens > 0:
            self._per_token = _average(self._per_token, seconds / tokens)


class DecodeClock:
    """How long one pass of the worker spends decoding, over every model (a running average)."""

    def __init__(self) -> None:
        #: ``None`` until a pass decoded.
        self.step: float | None = None

    def decoded(self, seconds: float) -> None:
        """One pass's decode steps took ``seconds``."""
        self.step = _average(self.step, seconds)


def _average(old: float | None, new: float) -> float:
    return new if old is None else 0.8 * old + 0.2 * new
