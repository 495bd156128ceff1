"""How big an embedding batch may be while sequences decode: the worker's decode clock and
each model's pacer, so a burst of embeddings slows streams down instead of freezing them.
"""

from __future__ import annotations

#: Tokens of one embedding batch while no sequence of the model decodes (nobody waits on
#: its step, so a burst runs in as few batches as this allows).
IDLE_EMBED_TOKENS = 8192


class Pacer:
    """Sizes a model's embedding batches while sequences decode on the worker (this model's
    or another's): each takes about ``SHARE`` of one decode step's time (so a stream's gap
    between tokens grows by about half), never more than ``cap`` tokens (one prefill step).
    The step's time is the worker's (``DecodeClock``).

    A model's first batch beside decoding is one token; after each, the size scales by how
    the batch's whole time (fixed cost of the forward pass included) compared with its
    share of the step, at most doubling, and grows by a token at least while a batch took
    under ``GROW_BELOW`` of that share. So it approaches the batch that fits its share from
    below, and one batch much cheaper than its tokens say (a norm among an encoder's pieces)
    cannot make the next one many steps long. A size learned beside longer steps shrinks
    with the step it is used beside. Batches run with nothing decoding teach it nothing:
    sized by the idle budget, their fixed cost spread over thousands of tokens, they used to
    make the first batches beside a stream overshoot the step. Where the fixed cost alone is
    about the share (a tiny model on a CPU) a batch stays at one token: the smallest unit of
    work, so embeddings still advance while the stream keeps most of its pace."""

    MIN_TOKENS = 1
    GROW_BELOW = 0.9
    #: The part of a decode step's time one batch may take. A whole step doubled a stream's
    #: gap p50 by design, and with any jitter its p99 went past twice the stream's own.
    SHARE = 0.5

    def __init__(self) -> None:
        self._tokens = self.MIN_TOKENS
        self._step: float | None = None  # the step ``_tokens`` was learned beside

    def budget(self, decoding: bool, step: float | None, cap: int, idle: int) -> int:
        """Tokens (padding included) for the next embedding batch."""
        if not decoding:
            return max(idle, cap)
        tokens = self._tokens
        if step is not None and self._step is not None and step < self._step:
            tokens = int(tokens * step / self._step)
        return max(self.MIN_TOKENS, min(cap, tokens))

    def embedded(self, tokens: int, seconds: float, step: float | None) -> None:
        """One embedding batch of ``tokens`` took ``seconds`` beside decode steps of
        ``step`` seconds (``None``: nothing decoded, or no step measured yet)."""
        if step is None or tokens <= 0 or seconds <= 0:
            return
        share = self.SHARE * step
        scaled = min(round(tokens * share / seconds), 2 * tokens)
        if seconds < self.GROW_BELOW * share:
            scaled = max(scaled, tokens + 1)
        self._tokens, self._step = max(self.MIN_TOKENS, scaled), step


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
