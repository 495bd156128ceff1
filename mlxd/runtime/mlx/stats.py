"""The worker's counters: written on the MLX thread, read by ``/mlxd/status`` and metrics.

Each field is a plain int that one thread writes and others read; a reader may see one
step's figures mixed with the next one's, never a torn value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlxd.runtime.mlx.prompt_cache import PromptCache


@dataclass(slots=True)
class WorkerStats:
    """What the worker did since it started (it survives a worker restart)."""

    #: Decode steps that produced tokens (a batch step or a solo step).
    steps: int = 0
    #: Most sequences decoded in one step.
    largest_batch: int = 0
    #: Prompt tokens run through a model (cached prefixes excluded).
    prompt_tokens_processed: int = 0
    #: Embedding batches run (a long input's chunk, or a few layers of a batch too large for
    #: one pass, counts as one) and the inputs they embedded: how well requests were merged.
    embedding_batches: int = 0
    embedded_inputs: int = 0
    #: MLX's live array bytes and buffer-cache bytes, refreshed when the worker is idle.
    mlx_active_bytes: int = 0
    mlx_cache_bytes: int = 0
    #: The bound on MLX's buffer cache (a share of the memory budget on a GPU, MLX's own on the CPU).
    mlx_cache_limit_bytes: int = 0
    #: The prompt caches of every loaded model, refreshed with the memory figures.
    prompt_cache_bytes: int = 0
    prompt_cache_entries: int = 0
    #: A distributed daemon's seconds per decode pass of each rank (by rank; empty in one
    #: process), as the ranks last reported them to rank 0.
    rank_step_seconds: list[float] = field(default_factory=list)

    def measure(self, prompt_caches: Iterable[PromptCache]) -> None:
        """Read MLX's memory figures and the prompt caches' sizes now (on the worker thread)."""
        import mlx.core as mx  # here: the asyncio side imports these stats without MLX

        self.mlx_active_bytes = mx.get_active_memory()
        self.mlx_cache_bytes = mx.get_cache_memory()
        caches = list(prompt_caches)
        self.prompt_cache_bytes = sum(cache.bytes for cache in caches)
        self.prompt_cache_entries = sum(len(cache) for cache in caches)

    def stepped(self, rows: int) -> None:
        """Count one decode step of ``rows`` sequences."""
        self.steps += 1
        if rows > self.largest_batch:
            self.largest_batch = rows

    def embedded(self, ran: int, tokens: int, inputs: int) -> None:
        """Count one embedding batch that ran ``ran`` tokens (none: it failed) and finished
        ``inputs`` inputs of ``tokens`` tokens."""
        if ran:
            self.embedding_batches += 1
        self.prompt_tokens_processed += tokens
        self.embedded_inputs += inputs

    def memory(self) -> dict[str, int]:
        """The memory figures as ``/mlxd/status`` shows them."""
        return {
            "mlx_active_bytes": self.mlx_active_bytes,
            "mlx_cache_bytes": self.mlx_cache_bytes,
            "mlx_cache_limit_bytes": self.mlx_cache_limit_bytes,
            "prompt_cache_bytes": self.prompt_cache_bytes,
            "prompt_cache_entries": self.prompt_cache_entries,
        }
