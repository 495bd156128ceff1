"""What every engine does above its worker: residency, admission and streams composed.

``MlxEngine`` puts the MLX worker thread under it; the tests' fake engine a scripted one.
Both admit requests, hand out streams, load and unload models, apply config edits and
report their status through this one class, so a fake-engine test exercises the same
rules as the daemon.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from mlxd.errors import MlxdError, RequestError
from mlxd.runtime.admission import Admission, Admitted, AdmittedEmbeddings, ModelFacts, check_capacity
from mlxd.runtime.engine import EngineStatus
from mlxd.runtime.mlx.stats import WorkerStats
from mlxd.runtime.requests import EmbeddingRequest, Embeddings, GenerationRequest
from mlxd.runtime.residency import Residency
from mlxd.runtime.specs import ModelSpec, RuntimeSettings, UnitKey
from mlxd.runtime.streams import Stream
from mlxd.runtime.units import ResidencyBackend, Resident, Unit


class Servable(Resident, ModelFacts, Protocol):
    """A loaded model as an engine needs it: its memory for residency, its facts for admission."""


M = TypeVar("M", bound=Servable)
T = TypeVar("T")


class EngineCore(Generic[M]):
    """Residency over a backend, admission, and the bookkeeping of admitted sequences."""

    def __init__(
        self,
        settings: RuntimeSettings,
        backend: ResidencyBackend[M],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.residency: Residency[M] = Residency(
            backend,
            max_loaded_models=settings.max_loaded_models,
            memory_budget_bytes=settings.memory_budget_bytes,
            clock=clock,
        )
        self.admission = Admission()
        #: The worker's counters (kept across worker restarts).
        self.stats = WorkerStats()
        self._seq_ids = itertools.count(1)
        #: The streams handed out and not ended yet, by sequence id.
        self._live: dict[int, Stream] = {}
        #: Requests being admitted (tokenized and checked, their model loaded).
        self.admitting = 0
        #: Set by ``abort``: what every later admission and every live stream ends with.
        self._aborted: MlxdError | None = None
        #: Resolved by ``abort``, for admissions still waiting for their model to load.
        self._abort_signal: asyncio.Future[None] | None = None

    def healthy(self) -> bool:
        """True while the worker runs (each engine knows its own)."""
        raise NotImplementedError

    def cancel(self, seq_id: int) -> None:
        """Tell the worker to drop a sequence (its client left)."""
        raise NotImplementedError

    async def admit(self, request: GenerationRequest) -> tuple[Unit[M], Admitted]:
        """The request's unit (loaded, or loading it first) with room for its ``n`` choices,
        and the request tokenized and checked; raises the error its client should get."""
        if self._aborted is not None:
            raise self._aborted
        unit = self.residency.acquire(request.alias, request.spec, request.keep_alive, request.n)
        try:
            ready = self.residency.ready(unit)
            # A load can take a while: a stop must not wait for it.
            model = await (ready if unit.loaded is not None else self._unless_aborted(ready))
            check_capacity(request.alias, unit.active, self.settings)
            # Counted from here: a request waiting for its model to load is not about to start.
            self.admitting += 1
            try:
                admitted = await self.admission.admit(request, model)
            finally:
                self.admitting -= 1
            if self._aborted is not None:
                raise self._aborted
        except BaseException:
            self.residency.release(unit, request.n)
            self.admission_failed()
            raise
        return unit, admitted

    def admission_failed(self) -> None:
        """An admission ended in an error (each engine may be waiting for it to end)."""

    async def _unless_aborted(self, work: Awaitable[T]) -> T:
        """``work``'s result, or the abort's error if ``abort`` comes first."""
        if self._abort_signal is None:
            self._abort_signal = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(work)
        try:
            await asyncio.wait((task, self._abort_signal), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()  # it only waits on the (shielded) load, which goes on
        if not task.done():
            assert self._aborted is not None
            raise self._aborted
        return task.result()

    async def count_tokens(self, request: GenerationRequest) -> int:
        """How many tokens the request's prompt is, by the model's own template (the model
        loads first if it must; nothing is generated)."""
        unit = self.residency.acquire(request.alias, request.spec, request.keep_alive)
        try:
            model = await self.residency.ready(unit)
            return await self.admission.count(request, model)
        finally:
            self.residency.release(unit)

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Embed the request's inputs with its model (loading it first if it must)."""
        if self._aborted is not None:
            raise self._aborted
        unit = self.residency.acquire(request.alias, request.spec, request.keep_alive)
        try:
            model = await self.residency.ready(unit)
            check_capacity(request.alias, unit.active, self.settings)
            admitted = await self.admission.admit_embeddings(request, model)
            vectors = await self.run_embeddings(unit, admitted, request.request_id)
        finally:
            self.residency.release(unit)
        prompt_tokens = sum(len(tokens) for tokens in admitted.tokens)
        return Embeddings(shorten(vectors, request.dimensions), prompt_tokens)

    async def run_embeddings(
        self, unit: Unit[M], admitted: AdmittedEmbeddings, request_id: str
    ) -> npt.NDArray[np.float32]:
        """The pooled (and normalized) vectors of admitted inputs (each engine has its worker)."""
        raise NotImplementedError

    def streams(self, unit: Unit[M], admitted: Admitted, count: int) -> list[Stream]:
        """One stream per choice; each frees its share of ``unit`` when it ends."""
        out = []
        for _ in range(count):
            seq_id = next(self._seq_ids)
            stream = Stream(seq_id, len(admitted.tokens), self.cancel, self._ender(seq_id, unit))
            self._live[seq_id] = stream
            out.append(stream)
        return out

    def _ender(self, seq_id: int, unit: Unit[M]) -> Callable[[], None]:
        def end() -> None:
            del self._live[seq_id]
            self.residency.release(unit)

        return end

    def abort(self, error: MlxdError) -> int:
        """End every sequence with ``error``, and every admission from now on: the daemon is
        stopping. Each live stream's reader gets the error after what was ready, the worker
        drops its sequences before its next step, and requests still waiting for a model
        fail at once. Returns how many sequences were running."""
        self._aborted = error
        if self._abort_signal is not None and not self._abort_signal.done():
            self._abort_signal.set_result(None)
        live = list(self._live.values())
        for stream in live:
            stream.fail(error)
        return len(live)

    async def load(self, alias: str, spec: ModelSpec, keep_alive: float) -> None:
        """Load (or keep) the unit behind ``alias`` now."""
        await self.residency.load(alias, spec, keep_alive)

    async def unload(self, alias: str) -> bool:
        """Unload every idle unit ``alias`` uses; False when none was loaded."""
        return await self.residency.unload(alias)

    def retire_unused(self, keys: set[UnitKey]) -> None:
        """Units no alias uses any more unload once their last request finishes."""
        self.residency.retire(keys)

    def configure(self, settings: RuntimeSettings, units: Mapping[UnitKey, Collection[str]]) -> None:
        """Apply a config generation: the limits now, and retirement of the units no alias
        names any more (an engine passes the rest on to its worker)."""
        self.settings = settings
        self.residency.set_limits(settings.max_loaded_models, settings.memory_budget_bytes)
        self.residency.retire(units.keys(), units)

    def status(self) -> EngineStatus:
        """What is loaded and how busy it is."""
        models = self.residency.status()
        batch = self.settings.max_batch_size
        stats = self.stats
        return EngineStatus(
            worker="running" if self.healthy() else "down",
            models=models,
            active_sequences=sum(m.active_sequences for m in models),
            queue_depth=sum(max(0, m.active_sequences - batch) for m in models),
            batches=stats.steps,
            largest_batch=stats.largest_batch,
            loads=self.residency.loads,
            prompt_tokens_processed=stats.prompt_tokens_processed,
            embedding_batches=stats.embedding_batches,
            embedded_inputs=stats.embedded_inputs,
            memory=stats.memory(),
            rank_step_seconds=list(stats.rank_step_seconds),
        )

    async def close(self) -> None:
        """Stop admitting (its executor goes)."""
        self.admission.close()


def shorten(vectors: npt.NDArray[np.float32], dimensions: int | None) -> npt.NDArray[np.float32]:
    """The first ``dimensions`` values of each vector, scaled to unit length again (as
    OpenAI's ``dimensions`` works for models trained to be cut this way)."""
    if dimensions is None:
        return vectors
    width = vectors.shape[1]
    if dimensions > width:
        raise RequestError(f"dimensions must be at most {width} for this model", param="dimensions")
    cut = vectors[:, :dimensions]
    norms = np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)
    shortened: npt.NDArray[np.float32] = (cut / norms).astype(np.float32)
    return shortened
