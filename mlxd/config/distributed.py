"""``[distributed]``: serve every alias across several processes or Macs with MLX's own
distributed runtime (``mx.distributed``, started with ``mlx.launch``).

The section's presence is the switch: without it mlxd is one process. Rank 0 is this
machine (it serves HTTP); the other ranks follow its every step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from mlxd.config.values import Duration, Strings

#: The backends ``mx.distributed`` knows; ``any`` takes the hostfile's, else ``ring``.
Backend = Literal["any", "ring", "jaccl", "mpi", "nccl"]
#: How an alias's model is split over the ranks.
Parallel = Literal["tensor", "pipeline"]


class DistributedConfig(BaseModel):
    """``[distributed]``: the machines (ranks) that serve together, and how they talk."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    hosts: Strings = Field(
        default=(),
        description=(
            "The ranks' machines, rank 0 first (rank 0 must be this machine: it serves HTTP):"
            " IP addresses or ssh host names. The same host may repeat (several ranks on one"
            " machine). Instead of hostfile."
        ),
    )
    hostfile: str | None = Field(
        default=None,
        description=(
            "A hostfile written by mlx.distributed_config (JSON; relative to this file),"
            " instead of hosts: it names each machine's ssh host, IPs and RDMA devices."
        ),
    )
    backend: Backend = Field(
        default="any",
        description=(
            "MLX's distributed backend: ring (TCP, e.g. over Thunderbolt), jaccl (Thunderbolt"
            " RDMA), mpi, nccl (CUDA), or any (the hostfile's, else ring)."
        ),
    )
    port: int = Field(
        default=32323,
        ge=1,
        le=65000,
        description="First TCP port the ranks connect on (ring: one per rank and IP; jaccl: the coordinator).",
    )
    start_timeout: Duration = Field(
        default=120.0,
        gt=0,
        description="Every rank must start and join the others within this long, or the daemon does not start.",
    )
    heartbeat_timeout: Duration = Field(
        default=10.0,
        ge=1,
        description="A rank silent this long is taken for dead: the daemon stops with an error naming it.",
    )

    _base_dir: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_host_list(self) -> DistributedConfig:
        if self.hostfile is not None and self.hosts:
            raise ValueError("set hosts or hostfile, not both")
        if self.hostfile is None and len(self.hosts) < 2:
            raise ValueError(
                "needs at least two hosts (rank 0, this machine, first; a host may repeat) or a hostfile"
            )
        for host in self.hosts:
            if not host.strip() or any(c.isspace() or ord(c) < 32 or c in "'\"`$;&|" for c in host):
                raise ValueError(f"{host!r} is not a host name or IP address")
        return self

    def bind(self, base_dir: Path) -> None:
        """Remember the config file's directory, against which a relative hostfile resolves."""
        self._base_dir = base_dir

    @property
    def hostfile_path(self) -> Path | None:
        """The hostfile, absolute, when one is configured."""
        if self.hostfile is None:
            return None
        return ((self._base_dir or Path.cwd()) / Path(self.hostfile).expanduser()).resolve()
