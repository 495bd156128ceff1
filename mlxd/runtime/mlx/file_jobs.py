"""One background thread that runs file jobs in the order they were queued.

The prompt-cache files are written, scanned and deleted here, so no file operation costs
the MLX worker more than a queue put. A job that raises is logged and the next one runs.
The thread starts with the first job and writes MLX arrays (``save_prompt_cache``), so
it releases its MLX streams when it stops.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable

import mlx.core as mx

log = logging.getLogger("mlxd.runtime")


class FileJobs:
    """A FIFO of jobs for one daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the jobs queued so far are done (False: timed out)."""
        done = threading.Event()
        self.submit(done.set)
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Finish the jobs queued so far, then stop the thread."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    job()
                except Exception:
                    log.exception("a prompt cache file operation failed")
        finally:
            with contextlib.suppress(Exception):
                mx.clear_streams()
