"""A follower rank: the MLX worker without an event loop, applying rank 0's commands.

It serves no clients: it loads its shard of each model rank 0 loads, and takes every
decode step rank 0 takes, until rank 0 shuts the daemon down.
"""

from __future__ import annotations

import queue

from mlxd.runtime.cluster import ClusterSpec
from mlxd.runtime.mlx.lockstep_wire import NoLoop
from mlxd.runtime.mlx.stats import WorkerStats
from mlxd.runtime.mlx.worker import MlxWorker
from mlxd.runtime.specs import RuntimeSettings


def follow(cluster: ClusterSpec) -> bool:
    """Run this rank's worker on the calling thread until rank 0 shuts it down.

    Returns False when the worker failed (it logged why): the rank must then end, since
    the others cannot go on without it."""
    worker = MlxWorker(
        NoLoop(),  # type: ignore[arg-type]
        queue.SimpleQueue(),
        RuntimeSettings(),  # rank 0 sends its own before anything else
        WorkerStats(),
        lambda exc: None,
        cluster,
    )
    worker.run()
    return worker.alive
