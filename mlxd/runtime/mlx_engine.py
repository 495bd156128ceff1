"""``MlxEngine``: the ``Engine`` the daemon serves, ``EngineCore`` over the MLX worker.

``Residency`` decides which units are loaded and ``MlxBackend`` carries that out on the
worker; admission and streams come with ``EngineCore``. Every MLX call happens on the
worker thread behind ``WorkerHandle``; nothing here imports MLX.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlxd.errors import MlxdError, StartupError
from mlxd.logs import REQUEST_ID
from mlxd.runtime.admission import AdmittedEmbeddings
from mlxd.runtime.burst_gate import BurstGate
from mlxd.runtime.cluster import ClusterSpec
from mlxd.runtime.engine_core import EngineCore
from mlxd.runtime.mlx.commands import Cancel, Choice, Command, Configure, Embed, Insert, Load, Unload
from mlxd.runtime.mlx.handle import WorkerHandle
from mlxd.runtime.requests import GenerationRequest, TextPrompt
from mlxd.runtime.specs import ModelSpec, RuntimeSettings, UnitKey
from mlxd.runtime.streams import Stream
from mlxd.runtime.units import LoadPlan, Unit

if TYPE_CHECKING:
    from mlxd.runtime.mlx.loading import LoadedModel

log = logging.getLogger("mlxd.runtime")


def safetensors_bytes(path: Path) -> int:
    """Weights on disk: the best estimate of memory before a load."""
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


class MlxBackend:
    """Residency's backend in the daemon: files checked off the loop, loads on the worker."""

    def __init__(
        self,
        submit: Callable[[Command], None],
        resolve_path: Callable[[ModelSpec], Path],
        estimate_bytes: Callable[[Path], int] = safetensors_bytes,
    ) -> None:
        self._submit = submit
        self._resolve_path = resolve_path
        self._estimate = estimate_bytes

    async def prepare(self, spec: ModelSpec, shares_base: bool) -> LoadPlan:
        """Resolve and validate the unit's directory; estimate what it adds to memory."""
        path = await asyncio.to_thread(self._resolve_path, spec)
        if not shares_base:
            return LoadPlan(await asyncio.to_thread(self._estimate, path), path)
        # Over weights already in memory only an adapter adds (units that differ in engine
        # options alone add nothing).
        adapter = spec.adapter_path
        return LoadPlan(await asyncio.to_thread(self._estimate, adapter) if adapter else 0, path)

    async def load(self, key: UnitKey, spec: ModelSpec, plan: LoadPlan) -> LoadedModel:
        """Load on the worker (the request that needed it names the worker's log lines)."""
        assert plan.path is not None
        future: Future[LoadedModel] = Future()
        self._submit(Load(key, spec, plan.path, future, REQUEST_ID.get()))
        return await asyncio.wrap_future(future)

    async def unload(self, key: UnitKey) -> bool:
        """Free the unit on the worker."""
        future: Future[bool] = Future()
        self._submit(Unload(key, future))
        return await asyncio.wrap_future(future)


class MlxEngine(EngineCore["LoadedModel"]):
    """The runtime behind the HTTP layer, backed by one MLX worker thread.

    A worker that crashes is restarted. With ``cluster`` the worker is rank 0 of a
    distributed daemon, which the engine passes on unread; a worker that fails then cannot
    be restarted alone (the other ranks would not know): ``on_fatal`` is told instead, and
    ends the daemon. A worker that cannot start (a broken MLX install) would fail the same
    way again: ``on_fatal`` is told too, with a ``StartupError``, and meanwhile every command
    is refused with a 503.
    """

    def __init__(
        self,
        settings: RuntimeSettings,
        resolve_path: Callable[[ModelSpec], Path],
        estimate_bytes: Callable[[Path], int] = safetensors_bytes,
        clock: Callable[[], float] = time.monotonic,
        worker_stop_s: float = 10.0,
        on_worker_start: Callable[[], None] | None = None,
        cluster: ClusterSpec | None = None,
        on_fatal: Callable[[MlxdError], None] | None = None,
    ) -> None:
        super().__init__(settings, MlxBackend(self.submit, resolve_path, estimate_bytes), clock)
        #: Every command goes through it: a burst of requests reaches the worker together.
        self._gate: BurstGate[Command] = BurstGate(self._send, lambda: self.admitting)
        #: How long ``stop`` waits for the worker to finish its step (a prefill chunk).
        self.worker_stop_s = worker_stop_s
        #: Runs on the event loop each time a worker thread has imported MLX.
        self.on_worker_start = on_worker_start
        self._worker: WorkerHandle | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._cluster = cluster
        self._on_fatal = on_fatal

    async def start(self) -> None:
        """Start the worker thread and the keep_alive reaper."""
        self._start_worker()
        self._reaper = asyncio.create_task(self._reap(), name="mlxd-reaper")

    async def stop(self) -> None:
        """Stop the reaper and the worker thread."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        self._gate.flush()
        if self._worker is not None:
            await asyncio.to_thread(self._worker.stop, self.worker_stop_s)
        await self.close()

    def _start_worker(self) -> None:
        loop = asyncio.get_running_loop()
        self._worker = WorkerHandle(
            loop,
            self.settings,
            self.stats,
            self._worker_crashed,
            self.on_worker_start,
            self._cluster,
            self._worker_not_started,
        )
        self._worker.start()

    def _worker_not_started(self, error: StartupError) -> None:
        if self._on_fatal is not None:
            self._on_fatal(error)
        else:
            log.error("%s (%s)", error.message, error.hint)

    def _worker_crashed(self, exc: BaseException) -> None:
        if self._cluster is not None and self._on_fatal is not None:
            self._on_fatal(MlxdError(f"the MLX worker failed: {exc}"))
            return
        log.error("restarting the MLX worker after a crash: %s", exc)
        self.residency.clear()
        self._start_worker()

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self.residency.expire()

    def healthy(self) -> bool:
        """True while the worker thread runs."""
        return self._worker is not None and self._worker.alive

    def submit(self, command: Command) -> None:
        """Hand a command to the worker thread (after the requests held before it)."""
        self._gate.send(command)

    def _send(self, command: Command) -> None:
        if self._worker is not None:
            self._worker.submit(command)

    def admission_failed(self) -> None:
        """A burst whose last admission failed goes to the worker now."""
        self._gate.settled()

    def cancel(self, seq_id: int) -> None:
        """Drop a sequence before the worker's next step."""
        self.submit(Cancel(seq_id))

    async def generate(self, request: GenerationRequest) -> list[Stream]:
        """Admit a request's choices (loading the model if needed) and start them on the worker."""
        unit, admitted = await self.admit(request)
        streams = self.streams(unit, admitted, request.n)
        seed = request.sampling.seed
        choices = [
            Choice(
                stream.seq_id,
                request.sampling if seed is None or i == 0 else replace(request.sampling, seed=seed + i),
                stream,
            )
            for i, stream in enumerate(streams)
        ]
        insert = Insert(
            unit.key,
            admitted.tokens,
            admitted.max_tokens,
            admitted.output,
            request.logprobs,
            choices,
            admitted.grammar,
            interval=request.delivery_interval,
            request_id=REQUEST_ID.get() or request.request_id,
            tool_format=admitted.tool_format,
            reasoning_format=admitted.reasoning_format,
            num_draft_tokens=request.num_draft_tokens,
            vision=admitted.vision,
            continues_text=isinstance(request.prompt, TextPrompt),
        )
        self._gate.send(insert, hold=True)  # with the rest of its burst
        return streams

    async def run_embeddings(
        self, unit: Unit[LoadedModel], admitted: AdmittedEmbeddings, request_id: str
    ) -> Any:
        """Queue the inputs on the model's runner; it batches them between decode steps."""
        future: Future[Any] = Future()
        command = Embed(
            unit.key,
            admitted.tokens,
            admitted.pooling,
            admitted.normalize,
            future,
            REQUEST_ID.get() or request_id,
        )
        self.submit(command)
        return await asyncio.wrap_future(future)

    def configure(self, settings: RuntimeSettings, units: Mapping[UnitKey, Collection[str]]) -> None:
        """Apply a config generation: limits and retirement now, batch size, prefill step
        and prompt-cache budget on the worker before its next step."""
        super().configure(settings, units)
        self.submit(Configure(settings))
