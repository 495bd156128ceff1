"""MLX's caches of compiled shapes may miss: the daemon's worker never fails work for it, builds
no cuDNN attention plan per shape, and keeps the kernels MLX compiles in mlxd's cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlxd.runtime.mlx.memory import (
    CUDNN_ATTENTION,
    KERNEL_CACHE,
    THRASHING_CHECK,
    attend_without_plans,
    keep_compiled_kernels,
    serve_through_cache_misses,
)

pytestmark = pytest.mark.mlx


def test_the_thrashing_check_is_off_unless_the_user_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THRASHING_CHECK, "")  # restored after the test, set or not
    monkeypatch.delenv(THRASHING_CHECK)
    serve_through_cache_misses()
    assert os.environ[THRASHING_CHECK] == "0"
    monkeypatch.setenv(THRASHING_CHECK, "1")  # whoever wants the check keeps it
    serve_through_cache_misses()
    assert os.environ[THRASHING_CHECK] == "1"


def test_cudnn_attention_is_off_unless_the_user_set_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CUDNN_ATTENTION, "")  # restored after the test, set or not
    monkeypatch.delenv(CUDNN_ATTENTION)
    attend_without_plans()
    assert os.environ[CUDNN_ATTENTION] == "0"
    monkeypatch.setenv(CUDNN_ATTENTION, "1")  # whoever wants cuDNN's attention keeps it
    attend_without_plans()
    assert os.environ[CUDNN_ATTENTION] == "1"


def test_a_daemon_worker_turns_them_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set where every worker starts (rank 0 and the followers alike)."""
    import asyncio
    import queue

    from mlxd.runtime.mlx import worker
    from mlxd.runtime.mlx.stats import WorkerStats
    from mlxd.runtime.mlx.worker import MlxWorker
    from mlxd.runtime.specs import RuntimeSettings

    monkeypatch.setenv(THRASHING_CHECK, "")  # restored after the test, set or not
    monkeypatch.delenv(THRASHING_CHECK)
    monkeypatch.setenv(CUDNN_ATTENTION, "")
    monkeypatch.delenv(CUDNN_ATTENTION)
    monkeypatch.setenv(KERNEL_CACHE, "")  # restored after the test, set or not
    monkeypatch.delenv(KERNEL_CACHE)
    monkeypatch.setattr(worker, "cache_dir", lambda: Path("/nonexistent/mlxd-cache"))
    # The worker's process-wide settings (a frozen heap, MLX's cache bound) stay out of this process.
    monkeypatch.setattr(worker, "settle_heap", lambda: None)
    monkeypatch.setattr(worker, "bound_cache", lambda _: 0)
    loop = asyncio.new_event_loop()
    try:
        MlxWorker(loop, queue.SimpleQueue(), RuntimeSettings(), WorkerStats(), lambda _: None)
    finally:
        loop.close()
    assert os.environ[THRASHING_CHECK] == "0"
    assert os.environ[CUDNN_ATTENTION] == "0"
    assert Path(os.environ[KERNEL_CACHE]).parent == Path("/nonexistent/mlxd-cache/kernels")


def test_compiled_kernels_go_to_the_cache_folder_unless_the_user_chose(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import mlx.core as mx

    monkeypatch.setenv(KERNEL_CACHE, "")  # restored after the test, set or not
    monkeypatch.delenv(KERNEL_CACHE)
    chosen = keep_compiled_kernels(tmp_path)
    assert chosen == tmp_path / "kernels" / f"mlx-{mx.__version__}"  # a new MLX compiles afresh
    assert os.environ[KERNEL_CACHE] == str(chosen)
    monkeypatch.setenv(KERNEL_CACHE, "/elsewhere")
    assert keep_compiled_kernels(tmp_path) == Path("/elsewhere")
    assert os.environ[KERNEL_CACHE] == "/elsewhere"
