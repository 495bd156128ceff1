"""The three things measured side by side, started once and kept running for a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.raw import RawEngine
from bench.servers import ServerProcess, start_mlx_lm, start_mlxd

MLXD = "mlxd"
SEED = "mlx_lm.server"
RAW = "raw engine"


@dataclass
class Targets:
    """mlxd and mlx_lm.server (healthy, model warm) plus the raw engine worker."""

    mlxd: ServerProcess
    seed: ServerProcess
    raw: RawEngine

    @property
    def servers(self) -> list[ServerProcess]:
        """The two HTTP servers, mlxd first."""
        return [self.mlxd, self.seed]

    def pid(self, name: str) -> int:
        """The process id behind a target's name."""
        return {MLXD: self.mlxd.pid, SEED: self.seed.pid, RAW: self.raw.pid}[name]

    def close(self) -> None:
        """Stop everything (each independently, so one failure stops no other)."""
        for server in self.servers:
            server.stop()
        self.raw.close()


def start_targets(model_dir: Path, workdir: Path, *, profile: Path | None = None) -> Targets:
    """Start all three; the caller warms the servers up (``profile``: see ``start_mlxd``)."""
    mlxd = start_mlxd(model_dir, workdir / "mlxd", profile=profile)
    seed = start_mlx_lm(model_dir, workdir / "mlx_lm")
    try:
        mlxd.wait_healthy()
        seed.wait_healthy()
        raw = RawEngine(model_dir, workdir / "raw.log")
    except BaseException:
        mlxd.stop()
        seed.stop()
        raise
    return Targets(mlxd, seed, raw)
