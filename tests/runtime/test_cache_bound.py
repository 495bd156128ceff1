"""How much freed memory the worker lets MLX keep: a share of the budget on a GPU, MLX's own
bound on the CPU (where a large cache made every prefill chunk touch fresh pages)."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mlxd.runtime.mlx.memory import bound_cache, cache_limit
from mlxd.runtime.specs import RuntimeSettings

pytestmark = pytest.mark.mlx


def test_a_gpu_keeps_a_share_of_the_budget_never_less_than_256_mb() -> None:
    assert cache_limit(RuntimeSettings(memory_budget_bytes=64 * 2**30)) == 8 * 2**30
    assert cache_limit(RuntimeSettings(memory_budget_bytes=2**30)) == 256 * 2**20


def test_the_cpu_keeps_mlxs_own_bound_and_reports_it() -> None:
    if mx.default_device() != mx.cpu:
        pytest.skip("the CPU backend's rule")
    own = mx.set_cache_limit(0)
    mx.set_cache_limit(own)
    try:
        assert bound_cache(RuntimeSettings(memory_budget_bytes=64 * 2**30)) == own
        assert mx.set_cache_limit(own) == own  # unchanged
    finally:
        mx.set_cache_limit(own)


def test_a_gpu_gets_the_share_and_it_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    own = mx.set_cache_limit(0)
    mx.set_cache_limit(own)
    settings = RuntimeSettings(memory_budget_bytes=64 * 2**30)
    monkeypatch.setattr(mx, "default_device", lambda: mx.Device(mx.gpu))
    try:
        assert bound_cache(settings) == cache_limit(settings)
        assert mx.set_cache_limit(own) == cache_limit(settings)
    finally:
        mx.set_cache_limit(own)
