"""The event loop's handle on the MLX worker thread (light: no MLX import at module level).

The worker module, and with it mlx-lm and transformers, is imported on the worker thread
itself, so the daemon answers ``/health`` while MLX is still loading; commands sent
meanwhile simply wait in the queue.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlxd.runtime.cluster import ClusterSpec
from mlxd.runtime.mlx.commands import Command, Shutdown
from mlxd.runtime.mlx.stats import WorkerStats
from mlxd.runtime.specs import RuntimeSettings

if TYPE_CHECKING:
    from mlxd.runtime.mlx.worker import MlxWorker


class WorkerHandle:
    """Starts the worker thread, queues commands for it, and reads its counters.

    ``on_start`` runs on the event loop once the thread has imported MLX and mlx-lm
    (mlx-lm's import resets the process's open-file limit, for one).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: RuntimeSettings,
        stats: WorkerStats,
        on_crash: Callable[[BaseException], None],
        on_start: Callable[[], None] | None = None,
        cluster: ClusterSpec | None = None,
    ) -> None:
        self.commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        #: Written by the worker thread; kept by the engine across worker restarts.
        self.stats = stats
        self._loop = loop
        self._settings = settings
        self._on_crash = on_crash
        self._on_start = on_start
        self._cluster = cluster
        self._worker: MlxWorker | None = None
        self._thread = threading.Thread(target=self._run, name="mlx-worker", daemon=True)

    def start(self) -> None:
        """Start the thread (returns at once)."""
        self._thread.start()

    def _run(self) -> None:
        from mlxd.runtime.mlx.worker import MlxWorker  # mlx-lm loads here, off the event loop

        self._worker = MlxWorker(
            self._loop, self.commands, self._settings, self.stats, self._on_crash, self._cluster
        )
        if self._on_start is not None:
            self._loop.call_soon_threadsafe(self._on_start)
        self._worker.run()

    def submit(self, command: Command) -> None:
        """Queue a command (thread-safe)."""
        self.commands.put(command)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to finish and wait for it."""
        if self._thread.is_alive():
            self.commands.put(Shutdown())
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the thread runs (also while it is still importing MLX)."""
        worker = self._worker
        return self._thread.is_alive() and (worker is None or worker.alive)
