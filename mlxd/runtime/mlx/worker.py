"""The one MLX worker thread: it takes commands, runs every model's decode step, delivers.

MLX is not thread-safe and its streams are thread-local, so every MLX call happens on
this thread. The asyncio side sends commands through a thread-safe queue; the worker
answers with one ``call_soon_threadsafe`` per pass of its loop carrying the events of
every sequence whose output is due (not one hop per token), and resolves
``concurrent.futures.Future``s for loads, unloads and calls. Each model unit's batch is
a ``ModelRunner``; the base weights they share live in the ``WeightStore``.

In a distributed daemon every rank runs this worker, and ``Lockstep`` makes them one:
rank 0's commands reach the others at the same point of the loop (``lockstep.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
from collections.abc import Callable

import mlx.core as mx

from mlxd.config.paths import cache_dir
from mlxd.errors import ModelLoadError, ModelUnsupportedError
from mlxd.logs import tagged
from mlxd.runtime.cluster import ClusterSpec
from mlxd.runtime.engine import GenerationEvent
from mlxd.runtime.mlx.batch import Out
from mlxd.runtime.mlx.commands import (
    Call,
    Cancel,
    Command,
    Configure,
    Embed,
    Insert,
    Load,
    Shutdown,
    Unload,
    abandon,
    deliver,
    drain,
    settle,
)
from mlxd.runtime.mlx.constrained import GrammarCache
from mlxd.runtime.mlx.loading import LoadedModel
from mlxd.runtime.mlx.lockstep import Lockstep
from mlxd.runtime.mlx.memory import (
    attend_without_plans,
    bound_cache,
    keep_compiled_kernels,
    release_memory,
    serve_through_cache_misses,
    settle_heap,
)
from mlxd.runtime.mlx.pacing import DecodeClock
from mlxd.runtime.mlx.prompt_disk import DiskPromptCache
from mlxd.runtime.mlx.runner import ModelRunner
from mlxd.runtime.mlx.stats import WorkerStats
from mlxd.runtime.mlx.unit_options import prepare
from mlxd.runtime.mlx.weights import WeightStore
from mlxd.runtime.specs import RuntimeSettings, UnitKey

log = logging.getLogger("mlxd.runtime")


class MlxWorker:
    """Owns the MLX thread state: the runners of the loaded units and their shared weights.

    With ``cluster`` it is one rank of a distributed daemon (see ``lockstep.py``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        commands: queue.SimpleQueue[Command],
        settings: RuntimeSettings,
        stats: WorkerStats,
        on_crash: Callable[[BaseException], None],
        cluster: ClusterSpec | None = None,
    ) -> None:
        self.alive = True
        self.stats = stats
        self._settings = settings
        self._loop = loop
        self._on_crash = on_crash
        self._commands = commands
        self._pending: list[Command] = []  # taken from the queue, not handled yet
        self._runners: dict[UnitKey, ModelRunner] = {}
        self._weights = WeightStore()
        self._grammars = GrammarCache()
        #: One pass's decode time: every model's embedding batches are sized to it.
        self._clock = DecodeClock()
        self._disk = DiskPromptCache(
            settings.prompt_cache_dir, settings.prompt_cache_disk_bytes, settings.prompt_cache_disk_min_tokens
        )
        self._cluster = cluster
        self._lockstep: Lockstep | None = None
        # MLX's first calls: a worker that cannot make them has not started (see handle.py).
        serve_through_cache_misses()
        attend_without_plans()
        log.debug("compiled kernels (CUDA) kept in %s", keep_compiled_kernels(cache_dir()))
        settle_heap()
        self.stats.mlx_cache_limit_bytes = bound_cache(settings)

    @property
    def runners(self) -> dict[UnitKey, ModelRunner]:
        """The loaded units' runners (read them on this thread only)."""
        return self._runners

    def run(self) -> None:
        """Serve commands on the calling thread (the worker thread) until shut down."""
        try:
            if self._cluster is not None:
                self._lockstep = Lockstep.join(self._cluster, self._settings, self.stats)
                self._weights = WeightStore(self._lockstep.load)
            self._serve()
        except BaseException as exc:  # the worker itself failed: report it, fail everyone
            log.exception("the MLX worker crashed")
            self.alive = False
            self._fail_everything()
            self._loop.call_soon_threadsafe(self._on_crash, exc)
        finally:
            self._runners.clear()
            self._weights.clear()
            self._disk.close()
            # Without this the process can abort at exit (thread-local streams).
            with contextlib.suppress(Exception):
                mx.clear_streams()

    def _fail_everything(self) -> None:
        """Nothing running or still queued may wait forever once the worker is gone."""
        failed = GenerationEvent.failure("the engine failed")
        out: Out = []
        for runner in self._runners.values():
            with contextlib.suppress(Exception):
                out.extend((seq.sink, failed) for seq in runner.close())
        queued = [*self._pending, *self._take(block=False)]
        out.extend(abandon(queued, ModelLoadError("the engine restarted; try again")))
        if out:
            self._loop.call_soon_threadsafe(deliver, out)

    def _serve(self) -> None:
        runners = self._runners
        while True:
            busy = any(runner.busy for runner in runners.values())
            if not busy:
                self.stats.measure(runner.prompt_cache for runner in runners.values())
            out: Out = []
            self._pending = self._drain(block=not busy)
            while self._pending:
                command = self._pending.pop(0)
                if isinstance(command, Shutdown):
                    return
                self._handle(command, out)
            decoding = any(runner.decoding for runner in runners.values())
            spent = 0.0
            for runner in list(runners.values()):
                if runner.busy:
                    spent += runner.step(out, decoding, self._clock)
            if spent:
                self._clock.decoded(spent)
            if out:
                self._loop.call_soon_threadsafe(deliver, out)
            # Finished sequences' caches, after their last events went out (each store waits
            # for the work queued on MLX's stream so far: this pass's steps of every model).
            for runner in runners.values():
                runner.prompt_cache.store_pending()

    def _drain(self, *, block: bool) -> list[Command]:
        if self._lockstep is not None:  # the same commands on every rank, at the same pass
            return self._lockstep.exchange(self._take, block=block)
        return self._take(block=block)

    def _take(self, *, block: bool) -> list[Command]:
        commands: list[Command] = []
        if block:
            # Wake up now and then while idle to refresh the memory figures.
            try:
                commands.append(self._commands.get(timeout=1.0))
            except queue.Empty:
                return commands
        return commands + drain(self._commands)

    def _handle(self, command: Command, out: Out) -> None:
        if isinstance(command, Insert):
            runner = self._runners.get(command.key)
            with tagged(command.request_id):
                if runner is None:
                    log.warning("a request arrived for a model that is not loaded")
                    failed = GenerationEvent.failure("the model is not loaded")
                    out.extend((choice.sink, failed) for choice in command.choices)
                else:
                    runner.insert(command, out)
        elif isinstance(command, Embed):
            runner = self._runners.get(command.key)
            if runner is None:
                command.future.set_exception(ModelLoadError("the model is not loaded; try again"))
            else:
                runner.embed(command)
        elif isinstance(command, Cancel):
            for runner in self._runners.values():
                if runner.cancel(command.seq_id):
                    break
        elif isinstance(command, Configure):
            self._settings = settings = command.settings
            self.stats.mlx_cache_limit_bytes = bound_cache(self._settings)
            for runner in self._runners.values():
                runner.configure(settings)
            self._disk.configure(
                settings.prompt_cache_dir,
                settings.prompt_cache_disk_bytes,
                settings.prompt_cache_disk_min_tokens,
            )
        elif isinstance(command, Load):
            with tagged(command.request_id):
                settle(command.future, lambda: self._load(command))
        elif isinstance(command, Unload):
            settle(command.future, lambda: self._unload(command.key, out))
        elif isinstance(command, Call):
            settle(command.future, lambda: command.fn(self))

    def _load(self, command: Load) -> LoadedModel:
        runner = self._runners.get(command.key)
        if runner is not None:
            return runner.loaded
        spec = command.spec
        draft = self._runners.get(spec.draft.key) if spec.draft is not None else None
        if spec.draft is not None and draft is None:
            raise ModelUnsupportedError(f"{spec.label or spec.source}: its draft model is not loaded")
        loaded = self._weights.open(spec, command.path)
        try:
            options = prepare(spec, command.path, loaded, draft.loaded if draft else None, self._disk)
            runner = self._runners[command.key] = ModelRunner(
                loaded, spec.base_key, self._settings, self.stats, self._grammars, options
            )
            if self._lockstep is not None:
                runner.prompt_cache.measure = self._lockstep.agreed_bytes
        except BaseException:
            self._weights.close(command.spec.base_key)
            raise
        settle_heap()
        return loaded

    def _unload(self, key: UnitKey, out: Out) -> bool:
        runner = self._runners.pop(key, None)
        if runner is None:
            return False
        unloaded = GenerationEvent.failure("the model was unloaded")
        out.extend((seq.sink, unloaded) for seq in runner.close())
        self._weights.close(runner.base_key)
        del runner
        release_memory()
        return True
