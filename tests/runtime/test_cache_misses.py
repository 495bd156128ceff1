"""MLX's caches of compiled shapes may miss: the daemon's worker never fails work for it."""

from __future__ import annotations

import os

import pytest

from mlxd.runtime.mlx.memory import THRASHING_CHECK, serve_through_cache_misses

pytestmark = pytest.mark.mlx


def test_the_thrashing_check_is_off_unless_the_user_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THRASHING_CHECK, raising=False)
    serve_through_cache_misses()
    assert os.environ[THRASHING_CHECK] == "0"
    monkeypatch.setenv(THRASHING_CHECK, "1")  # whoever wants the check keeps it
    serve_through_cache_misses()
    assert os.environ[THRASHING_CHECK] == "1"


def test_a_daemon_worker_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set where every worker starts (rank 0 and the followers alike)."""
    import asyncio
    import queue

    from mlxd.runtime.mlx import worker
    from mlxd.runtime.mlx.stats import WorkerStats
    from mlxd.runtime.mlx.worker import MlxWorker
    from mlxd.runtime.specs import RuntimeSettings

    monkeypatch.delenv(THRASHING_CHECK, raising=False)
    # The worker's process-wide settings (a frozen heap, MLX's cache bound) stay out of this process.
    monkeypatch.setattr(worker, "settle_heap", lambda: None)
    monkeypatch.setattr(worker, "bound_cache", lambda _: 0)
    loop = asyncio.new_event_loop()
    try:
        MlxWorker(loop, queue.SimpleQueue(), RuntimeSettings(), WorkerStats(), lambda _: None)
    finally:
        loop.close()
    assert os.environ[THRASHING_CHECK] == "0"
