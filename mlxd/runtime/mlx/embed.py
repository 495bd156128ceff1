"""Embeddings on the worker: a model's pending inputs, run in bounded batches between decode steps.

Every pass of the worker loop gives each model at most one embedding batch of at most
``budget`` tokens (padding included) before its decode step, so a burst of embedding
inputs never freezes open streams: while sequences decode (of any model on the worker),
``Pacer`` sizes each batch to take about one decode step (never more than one prefill
step), so a stream's gap between tokens at most doubles; with nothing decoding, batches
are as large as the idle budget.
Short inputs are right-padded into one batch: the model's attention is causal, so a
position never sees the padding after it and every pooling reads only real positions,
which makes batched vectors equal one-at-a-time ones to float tolerance. An input longer
than the budget (or than ``WIDEST``) runs alone, a chunk per pass, through a KV cache of
its own.

Inputs run in rounds: every input queued when a round begins, of every request, sorted
shortest first, so neighbours in a batch have about the same length and little of it is
padding (in arrival order, one request's longest inputs would share a batch with the next
one's shortest). What arrives meanwhile waits for the next round, so no request waits
behind inputs that came after it.

The model is reached through a ``Forward``: ``DecoderForward`` here for mlx-lm models, and
``encoder.EncoderForward`` for encoder models (mlx-embeddings), whose attention sees the
whole input, so their padding is masked instead, and which have no KV cache to chunk
through: a batch of theirs larger than the budget runs a few pieces of its layers per pass
instead (as many as the budget holds).

Pooling (``last``, ``mean``, ``cls``) reads the model's final hidden states (after its
last norm); vectors are normalized to unit length when asked.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import mlx.core as mx
import numpy as np
import numpy.typing as npt
from mlx_lm.models.cache import make_prompt_cache

from mlxd.errors import GenerationError
from mlxd.logs import tagged
from mlxd.runtime.mlx.commands import Embed
from mlxd.runtime.mlx.pacing import IDLE_EMBED_TOKENS

#: The longest input that runs whole, and the most attention scores a batch holds at once
#: (rows x width x width, per head): an idle batch may hold more tokens than this on a fast
#: accelerator, never a wider attention than one input of this length (MLX's attention on
#: CUDA holds a whole input's scores).
WIDEST = IDLE_EMBED_TOKENS

log = logging.getLogger("mlxd.runtime")


def hidden_states(model: Any) -> Any:
    """The module of ``model`` that returns its final hidden states (mlx-lm's ``model.model``;
    a vision wrapper's ``language_model.model``)."""
    inner = getattr(model, "model", None)
    if inner is None and hasattr(model, "language_model"):
        inner = getattr(model.language_model, "model", None)
    if inner is None:
        raise GenerationError("this model cannot embed: it has no hidden-state module")
    return inner


class Forward(Protocol):
    """How an ``Embedder`` runs its model."""

    #: True when an input longer than a batch's budget can run a chunk at a time (``open``,
    #: ``chunk``); else it runs in a batch of its own, a few pieces of its layers per pass
    #: (``layered``).
    chunked: bool

    def states(self, rows: list[list[int]]) -> Any:
        """Float32 token states (rows x longest x hidden) of ``rows``, right-padded into one
        batch; each row's states at its real positions are the ones it gets alone."""
        ...

    def open(self) -> list[Any]:
        """A fresh cache for one long input."""
        ...

    def chunk(self, tokens: list[int], cache: list[Any]) -> Any:
        """Float32 states (positions x hidden) of the next chunk of a long input."""
        ...

    def layered(self, rows: list[list[int]]) -> tuple[list[Any], Any]:
        """``states(rows)`` built but not evaluated, and the outputs of the pieces of its
        layers it goes through, in order, to evaluate a few at a time (none where the model is
        not split so)."""
        ...


class DecoderForward:
    """An mlx-lm model: causal attention, so right padding changes no real position."""

    chunked = True

    def __init__(self, model: Any) -> None:
        self._model = model
        self._states = hidden_states(model)

    def states(self, rows: list[list[int]]) -> Any:
        longest = max(len(row) for row in rows)
        padded = mx.array([row + [0] * (longest - len(row)) for row in rows])
        return self._states(padded).astype(mx.float32)

    def open(self) -> list[Any]:
        return make_prompt_cache(self._model)  # type: ignore[no-any-return]

    def chunk(self, tokens: list[int], cache: list[Any]) -> Any:
        return self._states(mx.array(tokens)[None], cache=cache)[0].astype(mx.float32)

    def layered(self, rows: list[list[int]]) -> tuple[list[Any], Any]:
        return [], self.states(rows)  # a long input runs in chunks instead


@dataclass(slots=True)
class _Job:
    command: Embed
    rows: list[npt.NDArray[np.float32] | None]
    left: int


@dataclass(slots=True)
class _Layered:
    """A batch whose forward pass runs a few pieces of its layers per pass: the pieces'
    outputs still to evaluate, and the vectors at the end of them."""

    items: list[_Input]
    pieces: list[Any]
    vectors: Any
    share: int  # the batch's padded tokens over its pieces


@dataclass(slots=True)
class _Input:
    """One input of a job; a long one keeps its cache and pooled state between chunks."""

    job: _Job
    index: int
    tokens: list[int]
    fed: int = 0
    cache: list[Any] | None = None
    pooled: Any = None


class Embedder:
    """The embedding queue of one model unit."""

    def __init__(self, forward: Forward) -> None:
        self._forward = forward
        self._queue: deque[_Input] = deque()  # this round's inputs, shortest first
        self._arrived: list[_Input] = []  # the next round's
        self._layered: _Layered | None = None
        #: Tokens run and inputs embedded so far (for the worker's counters).
        self.tokens = 0
        self.inputs = 0

    def __bool__(self) -> bool:
        return bool(self._queue) or bool(self._arrived) or self._layered is not None

    def add(self, command: Embed) -> None:
        """Queue a request's inputs for the next round (the vectors go back in its order)."""
        job = _Job(command, [None] * len(command.tokens), len(command.tokens))
        self._arrived.extend(_Input(job, i, tokens) for i, tokens in enumerate(command.tokens))

    def step(self, budget: int) -> int:
        """Run one batch of at most ``budget`` tokens (padding included), one chunk of a
        long input, or the next pieces of a batch too large for the budget that cannot be
        chunked; settle every request whose last input finished. Returns the tokens run (for
        pieces, their share of their batch's)."""
        if self._layered is not None:
            return self._guarded(self._layered.items, lambda: self._next_pieces(budget))
        if not self._queue:  # a new round
            self._queue = deque(sorted(self._arrived, key=lambda item: len(item.tokens)))
            self._arrived = []
        head, whole = self._queue[0], min(budget, WIDEST)
        if head.fed or (len(head.tokens) > whole and self._forward.chunked):
            return self._guarded([head], lambda: self._chunk(head, whole))
        chosen = self._choose(budget)
        return self._guarded(chosen, lambda: self._batch(chosen, budget))

    def fail_all(self, message: str) -> None:
        """Fail every queued request (the model is going away)."""
        items = [*self._queue, *self._arrived, *(self._layered.items if self._layered is not None else ())]
        self._fail_jobs(items, GenerationError(message))

    def _guarded(self, items: list[_Input], run: Callable[[], int]) -> int:
        """``run()``; when it fails, so does every request with an input among ``items``."""
        try:
            return run()
        except Exception as exc:
            log.exception("an embedding batch failed")
            self._layered = None
            self._fail_jobs(items, exc)
            return 0

    def _choose(self, budget: int) -> list[_Input]:
        chosen: list[_Input] = []
        longest = 0
        while self._queue and not self._queue[0].fed:
            item = self._queue[0]
            width = max(longest, len(item.tokens))
            rows = len(chosen) + 1
            if chosen and (width * rows > budget or rows * width * width > WIDEST**2):
                break
            chosen.append(self._queue.popleft())
            longest = width
        return chosen

    def _batch(self, chosen: list[_Input], budget: int) -> int:
        rows = [item.tokens for item in chosen]
        padded = max(len(row) for row in rows) * len(rows)
        if padded > budget:  # one input that cannot be chunked: a few pieces at a time
            pieces, states = self._forward.layered(rows)
        else:
            pieces, states = [], self._forward.states(rows)
        vectors = self._pooled(chosen, states)
        if pieces:
            self._layered = _Layered(chosen, pieces, vectors, -(-padded // len(pieces)))
            return self._next_pieces(budget)
        self._finish(chosen, vectors)
        return padded

    def _next_pieces(self, budget: int) -> int:
        """Evaluate as many of the layered batch's next pieces as ``budget`` tokens hold (one
        at least); after the last, the rest of the pass (final norm, pooling) is small."""
        layered = self._layered
        assert layered is not None
        count = max(1, budget // layered.share)
        now, layered.pieces = layered.pieces[:count], layered.pieces[count:]
        mx.eval(now)
        if not layered.pieces:
            self._layered = None
            self._finish(layered.items, layered.vectors)
        return len(now) * layered.share

    def _pooled(self, chosen: list[_Input], states: Any) -> Any:
        lengths = mx.array([len(item.tokens) for item in chosen])
        poolings = [item.job.command.pooling for item in chosen]
        pooled = {pooling: _pool(states, lengths, pooling) for pooling in set(poolings)}
        if len(pooled) > 1:  # aliases of one model that pool differently, in one batch
            return mx.stack([pooled[pooling][row] for row, pooling in enumerate(poolings)])
        return pooled[poolings[0]]

    def _chunk(self, item: _Input, budget: int) -> int:
        if item.cache is None:
            item.cache = self._forward.open()
        chunk = item.tokens[item.fed : item.fed + budget]
        states = self._forward.chunk(chunk, item.cache)
        pooling = item.job.command.pooling
        if pooling == "mean":
            total = states.sum(axis=0)
            item.pooled = total if item.pooled is None else item.pooled + total
        elif pooling == "cls" and item.fed == 0:
            item.pooled = states[0]
        elif pooling == "last":
            item.pooled = states[-1]
        mx.eval(item.pooled, [layer.state for layer in item.cache])
        item.fed += len(chunk)
        if item.fed < len(item.tokens):
            return len(chunk)
        self._queue.popleft()
        item.cache = None
        vector = item.pooled / len(item.tokens) if pooling == "mean" else item.pooled
        self._finish([item], vector[None])
        return len(chunk)

    def _finish(self, items: list[_Input], stacked: Any) -> None:
        """Settle ``items`` with their vectors (one row each)."""
        normalize = [item.job.command.normalize for item in items]
        norms = mx.maximum(mx.linalg.norm(stacked, axis=-1, keepdims=True), 1e-12)
        scaled = mx.where(mx.array(normalize)[:, None], stacked / norms, stacked)
        rows = np.asarray(scaled, dtype=np.float32)
        self.inputs += len(items)
        for item, row in zip(items, rows, strict=True):
            job = item.job
            self.tokens += len(item.tokens)
            job.rows[item.index] = row
            job.left -= 1
            if job.left == 0 and not job.command.future.done():
                job.command.future.set_result(np.stack(job.rows))  # type: ignore[arg-type]

    def _fail_jobs(self, items: list[_Input], exc: BaseException) -> None:
        """Fail each request with an input among ``items``, and drop its other inputs."""
        jobs = {id(item.job): item.job for item in items}
        self._queue = deque(item for item in self._queue if id(item.job) not in jobs)
        self._arrived = [item for item in self._arrived if id(item.job) not in jobs]
        error = exc if isinstance(exc, GenerationError) else GenerationError(f"embedding failed: {exc}")
        for job in jobs.values():
            with tagged(job.command.request_id):
                log.error("embedding failed: %s", exc)
            if not job.command.future.done():
                job.command.future.set_exception(error)


def _pool(states: Any, lengths: Any, pooling: str) -> Any:
    """Each row's vector from a batch's hidden states (rows x positions x hidden size),
    reading only its first ``lengths[row]`` positions."""
    if pooling == "mean":
        real = mx.arange(states.shape[1])[None, :] < lengths[:, None]
        return mx.where(real[..., None], states, 0.0).sum(axis=1) / lengths[:, None]
    if pooling == "cls":
        return states[:, 0]
    return states[mx.arange(states.shape[0]), lengths - 1]
