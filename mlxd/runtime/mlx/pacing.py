"""How big an embedding batch may be while sequences decode: the worker's decode clock and
each model's pacer, so a burst of embeddings slows streams down instead of freezing them.
"""

from __future__ import annotations

#: Tokens (padding included) of one embedding batch while nothing decodes: at least
#: ``IDLE_EMBED_TOKENS``, and as many more as the model runs in ``IDLE_BATCH_S``, up to
#: ``IDLE_EMBED_TOKENS_MAX``. Where 8,192 tokens of the model take longer than that (on a CPU;
#: on a Mac's GPU, for most models) batches stay at 8,192: there a pass's fixed cost is
#: nothing against its tokens, and a longer batch would only delay what arrives meanwhile (a
#: chat request's first prefill waits for it). On an H100 a pass's fixed cost (building the
#: graph, launching its kernels) weighs: four clients sending 256 inputs each got 0.74x the
#: raw engine's throughput from bge-base's shape with 8,192-token batches, 0.88x with 32,768
#: and 0.91x with this sizing (which reached 32,768); a 0.6B decoder 0.96x, 1.04x and 0.90x
#: (its batches grew to ~13,000 tokens; each figure one run, the last on another machine).
IDLE_EMBED_TOKENS = 8192
IDLE_EMBED_TOKENS_MAX = 32768
IDLE_BATCH_S = 0.1


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
    about the share or more (a tiny model on a CPU; a 28-layer decoder on an H100, whose one
    token costs about a decode step in kernel launches) a batch stays at one token, the
    smallest unit of work, and the share holds on average instead: each pass banks its share,
    a batch spends what it took, and no batch runs while the bank is in debt. Embeddings
    still advance, on as many passes as keep the share on average (every second or third
    on the H100), and the stream keeps its pace in between.

    With nothing decoding, batches are sized apart (``idle``): to what the model ran in
    ``IDLE_BATCH_S`` at the last batch's pace, between the idle bounds, at most doubling."""

    MIN_TOKENS = 1
    GROW_BELOW = 0.9
    #: The part of a decode step's time one batch may take. A whole step doubled a stream's
    #: gap p50 by design, and with any jitter its p99 went past twice the stream's own.
    SHARE = 0.5

    def __init__(self) -> None:
        self._tokens = self.MIN_TOKENS
        self._step: float | None = None  # the step ``_tokens`` was learned beside
        self._idle = IDLE_EMBED_TOKENS
        self._credit = 0.0  # seconds: shares banked, less what batches beside decoding took

    def budget(self, decoding: bool, step: float | None, cap: int) -> int:
        """Tokens (padding included) for the next embedding batch; 0: none this pass. Each
        call beside decoding banks a pass's share: call it once a pass."""
        if not decoding:
            self._credit = 0.0
            return max(self._idle, cap)
        if step is not None:  # at most one share banked: no catching up in a burst of batches
            self._credit = min(self._credit + self.SHARE * step, self.SHARE * step)
        if self._credit < 0:
            return 0
        tokens = self._tokens
        if step is not None and self._step is not None and step < self._step:
            tokens = int(tokens * step / self._step)
        return max(self.MIN_TOKENS, min(cap, tokens))

    def idle(self, tokens: int, seconds: float) -> None:
        """One embedding batch of ``tokens`` took ``seconds`` with nothing decoding. A batch
        under half the budget (the queue ran out) has its fixed cost spread over few tokens:
        it counts only when it took longer than ``IDLE_BATCH_S`` on its own."""
        if tokens <= 0 or seconds <= 0:
            return
        if 2 * tokens >= self._idle or seconds > IDLE_BATCH_S:
            fits = min(round(tokens * IDLE_BATCH_S / seconds), 2 * tokens)
            self._idle = max(IDLE_EMBED_TOKENS, min(IDLE_EMBED_TOKENS_MAX, fits))

    def embedded(self, tokens: int, seconds: float, step: float | None) -> None:
        """One embedding batch of ``tokens`` took ``seconds`` beside decode steps of
        ``step`` seconds (``None``: nothing decoded, or no step measured yet)."""
        if step is None or tokens <= 0 or seconds <= 0:
            return
        self._credit -= seconds
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
