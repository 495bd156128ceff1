"""How big an embedding batch may be: while sequences decode, the worker's decode clock and
each model's pacer, so a burst of embeddings slows streams down instead of freezing them;
with nothing decoding, what a forward pass costs on this machine (``PassCost``).
"""

from __future__ import annotations

import itertools
import logging
import statistics
from collections import deque

log = logging.getLogger("mlxd.runtime")

#: Tokens of one embedding batch while no sequence of the model decodes (nobody waits on
#: its step, so a burst runs in as few batches as this allows), unless ``PassCost`` finds
#: a forward pass's fixed cost large enough to allow more.
IDLE_EMBED_TOKENS = 8192
#: The most tokens an idle batch may grow to, however large a pass's fixed cost (memory).
MAX_IDLE_EMBED_TOKENS = 32768


class PassCost:
    """What one embedding batch costs on this machine, learned from the last idle ones: a
    fixed part per forward pass (building the graph, launching kernels) and a part per
    padded token, as a line through their (tokens, seconds) that a few outliers (a kernel
    built for a new shape, a pause) do not move: Theil-Sen, the median of the pairwise
    slopes, and the median intercept.

    On an accelerator the fixed part is milliseconds and a token costs microseconds, so a
    burst split at ``IDLE_EMBED_TOKENS`` paid the fixed part three times where one batch
    would do (a 12-layer encoder on a GPU: 41.9 against 37.9 ms for 256 inputs); on a CPU
    a token costs about as much as the fixed part, and splitting a burst into batches of
    about the same length saves padding. So an idle batch may hold ``FIXED_SHARE`` times
    the tokens that cost as much as the fixed part, between ``IDLE_EMBED_TOKENS`` and
    ``MAX_IDLE_EMBED_TOKENS``: it then takes at most about ``FIXED_SHARE + 1`` fixed parts
    of time, and the fixed part at most a ``FIXED_SHARE``-th of it."""

    WINDOW = 32
    #: The line is fitted again after this many batches (a fit costs ~0.1 ms of Python,
    #: which a stream of one-input requests would otherwise pay on every pass).
    REFIT = 8
    #: Batches of too alike a size say nothing about the cost per token: the largest must
    #: hold this many times the smallest's tokens, and at least ``LARGE`` tokens.
    SPREAD = 4
    LARGE = 2048
    FIXED_SHARE = 16

    def __init__(self) -> None:
        self._samples: deque[tuple[int, float]] = deque(maxlen=self.WINDOW)
        self._unfitted = 0
        self._budget = IDLE_EMBED_TOKENS

    @property
    def idle_budget(self) -> int:
        """Tokens (padding included) for the next batch with nothing decoding."""
        return self._budget

    def ran(self, tokens: int, seconds: float) -> None:
        """One batch of ``tokens`` padded tokens took ``seconds`` with nothing decoding."""
        if tokens <= 0 or seconds <= 0:
            return
        self._samples.append((tokens, seconds))
        self._unfitted += 1
        if self._unfitted < self.REFIT:
            return
        self._unfitted = 0
        fixed_tokens = self._fixed_tokens()
        budget = IDLE_EMBED_TOKENS
        if fixed_tokens is not None:
            budget = max(IDLE_EMBED_TOKENS, min(MAX_IDLE_EMBED_TOKENS, int(self.FIXED_SHARE * fixed_tokens)))
        if budget != self._budget:
            log.debug(
                "idle embedding batches: up to %d tokens (a pass's fixed cost: %s tokens)",
                budget,
                "unknown" if fixed_tokens is None else round(fixed_tokens),
            )
        self._budget = budget

    def _fixed_tokens(self) -> float | None:
        """How many tokens cost as much as a pass's fixed part; None while unknown."""
        samples = self._samples
        smallest = min(tokens for tokens, _ in samples)
        largest = max(tokens for tokens, _ in samples)
        if largest < max(self.LARGE, self.SPREAD * smallest):
            return None
        slopes = [
            (s2 - s1) / (t2 - t1) for (t1, s1), (t2, s2) in itertools.combinations(samples, 2) if t1 != t2
        ]
        per_token = statistics.median(slopes)
        if per_token <= 0:
            return None
        fixed = statistics.median(seconds - per_token * tokens for tokens, seconds in samples)
        return fixed / per_token if fixed > 0 else 0.0


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
    with the step it is used beside. Batches run with nothing decoding teach this size
    nothing (they teach ``cost``, which sizes the idle ones): sized by the idle budget,
    their fixed cost spread over thousands of tokens, they used to make the first batches
    beside a stream overshoot the step. Where the fixed cost alone is
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
        #: What a batch costs with nothing decoding (sizes the idle batches).
        self.cost = PassCost()

    def budget(self, decoding: bool, step: float | None, cap: int) -> int:
        """Tokens (padding included) for the next embedding batch."""
        if not decoding:
            return max(self.cost.idle_budget, cap)
        tokens = self._tokens
        if step is not None and self._step is not None and step < self._step:
            tokens = int(tokens * step / self._step)
        return max(self.MIN_TOKENS, min(cap, tokens))

    def embedded(self, tokens: int, seconds: float, step: float | None, decoding: bool) -> None:
        """One embedding batch of ``tokens`` took ``seconds`` beside decode steps of
        ``step`` seconds (``None``: nothing decoded, or no step measured yet); with nothing
        ``decoding``, it teaches ``cost`` instead."""
        if not decoding:
            self.cost.ran(tokens, seconds)
            return
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
