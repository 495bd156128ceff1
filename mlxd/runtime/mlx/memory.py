"""The worker's memory housekeeping: how much freed memory MLX may keep for reuse, keeping
long-lived objects out of the garbage collector's way, giving unloaded weights back, and
MLX's caches of compiled shapes.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import sys
from pathlib import Path

import mlx.core as mx

from mlxd.runtime.specs import RuntimeSettings

#: MLX's buffer cache may hold at most this share of the memory budget: freed buffers are
#: reused for the next allocations (fast), but without a bound it grew to many GB on a GPU.
CACHE_SHARE = 8


def cache_limit(settings: RuntimeSettings) -> int:
    """Bytes of freed buffers MLX may keep for reuse under ``settings``."""
    return max(256 * 2**20, settings.memory_budget_bytes // CACHE_SHARE)


#: MLX's switch for raising an error once a cache of compiled shapes has missed too often.
THRASHING_CHECK = "MLX_ENABLE_CACHE_THRASHING_CHECK"


def serve_through_cache_misses() -> None:
    """Keep MLX from failing work because its caches of compiled shapes miss.

    MLX's CUDA backend keeps LRU caches of what it built for a shape (CUDA graphs, cuDNN
    attention plans: tens of milliseconds each) and counts their misses over the life of
    the process; past twice a cache's capacity it raises "Cache thrashing" from the
    evaluation that missed (seen with ``python -m bench.probe DIR --lengths`` and a small
    ``MLX_CUDA_GRAPH_CACHE_SIZE``). Most requests bring a prompt length not seen before, so
    a daemon would fail requests sooner or later, while a miss only costs time. The check
    is turned off unless the user set it; MLX reads it when a cache is first used, on the
    worker, after this. (Metal has no such caches: the variable is then unread.)
    """
    os.environ.setdefault(THRASHING_CHECK, "0")


#: MLX's switch for cuDNN's fused attention on CUDA (a plan built and cached per shape).
CUDNN_ATTENTION = "MLX_CUDA_USE_CUDNN_SDPA"


def attend_without_plans() -> None:
    """Keep MLX's CUDA backend from building a cuDNN attention plan for every new shape.

    cuDNN's fused attention needs a plan per shape (rows, prompt width, key length, mask),
    built the first time a shape comes (40-120 ms on an H100) and kept in an LRU of 256,
    and a server meets new shapes all the time: every burst brings its own widest prompt,
    every prefill chunk its own key length. MLX's own attention, as on a Mac, needs none.
    On an H100 (``bench/RESULTS.md``, "Sixth run") 64 streaming clients' p99 time to first
    token fell 286 -> 169 ms (1B) and 511 -> 365 ms (8B shape). Long prompts' first prefill
    of a length cost 30-50% less, the warm ones were mixed (one 2,048-token prompt 43% slower,
    one of 16,384 17% faster), and peak memory was lower: mlxd prefills in chunks of
    ``prefill_step_size`` tokens, so the scores MLX's attention holds whole stay small. An
    encoder's input and an image's patches attend whole, unchunked: there the scores grow
    with the square of the input, within the embedding batches' token budget and the image
    caps. Off unless the user set it (1 keeps cuDNN's attention); MLX reads it at the first
    attention, on the worker, after this. Metal has no such plans: the variable is then
    unread.
    """
    os.environ.setdefault(CUDNN_ATTENTION, "0")


#: Where MLX's CUDA backend keeps the kernels it compiles at run time.
KERNEL_CACHE = "MLX_PTX_CACHE_DIR"


def keep_compiled_kernels(cache_root: Path) -> Path:
    """Keep the kernels MLX's CUDA backend compiles in mlxd's cache folder, one folder per
    MLX version, unless the user chose one; returns the folder in use.

    MLX compiles kernel variants the first time a shape needs them (0.5 s each on an H100)
    and keeps them in the system's temporary folder, which a reboot empties: mlxd's warm-up
    took 20 s on a fresh machine and 0.5 s with them kept. MLX reads the variable when it
    first compiles, on the worker, after this. (Metal's kernels come built: unread there.)
    """
    version = str(getattr(mx, "__version__", "unknown"))
    os.environ.setdefault(KERNEL_CACHE, str(cache_root / "kernels" / f"mlx-{version}"))
    return Path(os.environ[KERNEL_CACHE])


def settle_heap() -> None:
    """Put every object alive now out of the cyclic garbage collector's way.

    The daemon holds over 100,000 long-lived objects (the web stack, transformers, the
    tokenizers and models): a full collection walked them all (50-75 ms on the tiny
    model's daemon, several times during the first load). Frozen objects are still freed
    by reference counting, which is how an unloaded model's arrays go (they form no
    cycles), and collections only look at what was created since.
    """
    gc.freeze()


def release_memory() -> None:
    """Return freed weights to the OS (glibc keeps them otherwise; macOS needs no help)."""
    gc.collect()
    mx.clear_cache()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


@functools.cache
def _cpu_own_bound() -> int:
    """MLX's own bound on the CPU, read once (reading it means setting it, which empties the
    cache, so a config reload must not read it again)."""
    own = mx.set_cache_limit(0)
    mx.set_cache_limit(own)
    return int(own)


def bound_cache(settings: RuntimeSettings) -> int:
    """Bound MLX's cache of freed buffers under ``settings``; returns the bound in bytes.

    On the CPU backend MLX's own, smaller bound stays. A prefill's temporaries are sized by
    the prompt, new at every turn of every chat, so kept buffers rarely fit again: a large
    cache only grows, every chunk takes memory from the system anew, and a page the system
    hands out fresh costs more to touch than one freed a moment ago (on a VM that returns
    freed memory to its host, ~4x). On the benchmark's 2-core machine a 256-token chunk over
    a 1,250-token cached prefix took 51-56 ms under a 256 MB bound and 35-38 ms under MLX's
    32 MB one.
    """
    if mx.default_device() == mx.cpu:
        return _cpu_own_bound()
    limit = cache_limit(settings)
    mx.set_cache_limit(limit)
    return limit
