"""What a rank process learns from its environment: its rank, the others, the launcher.

The launcher passes one JSON variable (``MLXD_CLUSTER``) through ``mlx.launch`` to every
rank; ``mlx.launch`` (or ``mpirun``) sets the rank itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

#: The variable the launcher puts the ``Membership`` in.
ENV = "MLXD_CLUSTER"
#: Where launchers put a process's rank: mlx.launch, then Open MPI, then other MPIs.
_RANK_VARIABLES = ("MLX_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


@dataclass(frozen=True)
class Membership:
    """This process's rank among ``hosts``, and how to reach the launcher."""

    rank: int
    hosts: tuple[str, ...]
    backend: str
    control_host: str
    control_port: int
    token: str
    #: Seconds of silence after which the other end counts as gone.
    timeout: float
    #: Seconds a rank may take to reach the launcher at start.
    start_timeout: float

    @property
    def size(self) -> int:
        """How many ranks."""
        return len(self.hosts)

    def describe(self, rank: int) -> str:
        """``rank 1 (10.0.0.2)``."""
        host = self.hosts[rank] if 0 <= rank < len(self.hosts) else "?"
        return f"rank {rank} ({host})"

    def to_env(self) -> str:
        """The value of ``MLXD_CLUSTER`` for the ranks (without the rank: the launcher sets it)."""
        data = asdict(self)
        data.pop("rank")
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Membership | None:
        """This process's membership, or None when it is no rank of a distributed daemon."""
        raw = environ.get(ENV)
        if not raw:
            return None
        rank = next((environ[name] for name in _RANK_VARIABLES if environ.get(name)), None)
        data = json.loads(raw)
        data["hosts"] = tuple(data["hosts"])
        return cls(rank=int(rank) if rank is not None else -1, **data)
