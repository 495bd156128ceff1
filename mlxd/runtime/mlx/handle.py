"""The event loop's handle on the MLX worker thread (light: no MLX import at module level).

The worker module, and with it mlx-lm and transformers, is imported on the worker thread
itself, so the daemon answers ``/health`` while MLX is still loading; commands sent
meanwhile simply wait in the queue.

A worker that cannot start (MLX or mlx-lm does not import, MLX's first calls fail: a broken
install) would fail the same way again, so it is not restarted: ``on_start_failed`` gets a
``StartupError`` saying what failed and how to repair it, and every command queued then or
sent later is refused at once with a 503, so nothing waits on a worker that never came.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlxd.errors import StartupError, UnavailableError, one_line
from mlxd.runtime.cluster import ClusterSpec
from mlxd.runtime.mlx.commands import Command, Shutdown, abandon, deliver, drain
from mlxd.runtime.mlx.stats import WorkerStats
from mlxd.runtime.specs import RuntimeSettings

if TYPE_CHECKING:
    from mlxd.runtime.mlx.worker import MlxWorker

log = logging.getLogger("mlxd.runtime")


def start_failure(exc: BaseException) -> StartupError:
    """What a worker that could not start reports: the exception in one line, and how to
    reinstall MLX into the Python that runs mlxd."""
    packages = "mlx mlx-lm" if sys.platform == "darwin" else "'mlx[cpu]' mlx-lm"
    return StartupError(
        one_line(f"the MLX runtime failed to load: {type(exc).__name__}: {exc}".rstrip(": ")),
        hint=f"reinstall MLX and mlx-lm: `{sys.executable} -m pip install -U {packages}`",
    )


class WorkerHandle:
    """Starts the worker thread, queues commands for it, and reads its counters.

    ``on_start`` runs on the event loop once the thread has imported MLX and mlx-lm
    (mlx-lm's import resets the process's open-file limit, for one); ``on_start_failed``
    instead, when it could not.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: RuntimeSettings,
        stats: WorkerStats,
        on_crash: Callable[[BaseException], None],
        on_start: Callable[[], None] | None = None,
        cluster: ClusterSpec | None = None,
        on_start_failed: Callable[[StartupError], None] | None = None,
    ) -> None:
        self.commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        #: Written by the worker thread; kept by the engine across worker restarts.
        self.stats = stats
        self._loop = loop
        self._settings = settings
        self._on_crash = on_crash
        self._on_start = on_start
        self._on_start_failed = on_start_failed
        self._cluster = cluster
        self._worker: MlxWorker | None = None
        #: Set when the worker could not start: what every command gets instead.
        self._refusal: UnavailableError | None = None
        self._thread = threading.Thread(target=self._run, name="mlx-worker", daemon=True)

    def start(self) -> None:
        """Start the thread (returns at once)."""
        self._thread.start()

    def _run(self) -> None:
        try:
            from mlxd.runtime.mlx.worker import MlxWorker  # mlx-lm loads here, off the event loop

            worker = MlxWorker(
                self._loop, self.commands, self._settings, self.stats, self._on_crash, self._cluster
            )
        except BaseException as exc:  # however it failed, nobody may wait for this worker
            log.debug("the MLX worker could not start", exc_info=exc)
            self._loop.call_soon_threadsafe(self._not_started, start_failure(exc))
            return
        self._worker = worker
        if self._on_start is not None:
            self._loop.call_soon_threadsafe(self._on_start)
        worker.run()

    def _not_started(self, error: StartupError) -> None:
        """On the loop: report the failure, then refuse what is queued and all that comes."""
        self._refusal = UnavailableError(error.message)  # unhealthy from here on
        if self._on_start_failed is not None:
            self._on_start_failed(error)
        self._refuse_queued()

    def _refuse_queued(self) -> None:
        assert self._refusal is not None
        out = abandon(drain(self.commands), self._refusal)
        if out:
            self._loop.call_soon_threadsafe(deliver, out)

    def submit(self, command: Command) -> None:
        """Queue a command (thread-safe); refused at once when the worker could not start."""
        self.commands.put(command)
        # Put first, check after: a refusal set meanwhile has either taken this command
        # already or is seen here.
        if self._refusal is not None:
            self._refuse_queued()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to finish and wait for it."""
        if self._thread.is_alive():
            self.commands.put(Shutdown())
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the thread runs (also while it is still importing MLX), false from
        the moment a failed start is known, though the thread may not have ended yet."""
        worker = self._worker
        alive = self._thread.is_alive() and (worker is None or worker.alive)
        return alive and self._refusal is None
