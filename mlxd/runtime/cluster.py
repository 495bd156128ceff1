"""A process's place among the ranks of a distributed daemon, as the runtime needs it.

Plain data, no MLX: the composition root builds it and hands it to the engine, which
hands it on to the MLX worker thread unread. Only the worker acts on it (it joins
``mx.distributed`` and runs its commands in lockstep with the other ranks); nothing
between the HTTP layer and the worker knows how many ranks there are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlxd.runtime.specs import ModelSpec


def _no_op() -> None:
    return None


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """Rank ``rank`` of ``size``; ``hosts[r]`` names rank r in messages and status."""

    rank: int
    size: int
    hosts: tuple[str, ...]
    #: What ``mx.distributed.init`` is asked for (``ring``, ``jaccl``, ``mpi``, ``nccl``).
    backend: str
    #: Called on the worker thread once every rank has joined ``mx.distributed``.
    joined: Callable[[], None] = field(default=_no_op)
    #: How this rank finds a model's directory itself (followers: their own Hugging Face
    #: cache or the same local path); ``None``: the path rank 0 resolved.
    resolve: Callable[[ModelSpec], Path] | None = None

    def host(self, rank: int) -> str:
        """The host of ``rank``, as messages name it."""
        return self.hosts[rank] if 0 <= rank < len(self.hosts) else "?"

    def describe(self, rank: int) -> str:
        """``rank 1 (10.0.0.2)``: how every message names a rank."""
        return f"rank {rank} ({self.host(rank)})"
