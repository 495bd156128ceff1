"""Where and with what a run happened: versions, machine, date, load."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from bench.models import MODELS, BenchModel

REPO = Path(__file__).resolve().parent.parent


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def mlxd_revision() -> str:
    """The commit the mlxd package was measured at, flagging uncommitted changes to it."""
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    dirty = _git("status", "--porcelain", "--", "mlxd")
    return f"{commit} + uncommitted changes" if dirty else commit


def memory_bytes() -> int:
    """Physical memory (``sysconf`` works on Linux and macOS)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def cpu_model() -> str:
    """The CPU's marketing name when the OS tells it."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> str:
    """The 1-minute load average (others' work on a shared machine skews numbers)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


@dataclass
class RunInfo:
    """Everything the report header needs."""

    command: str
    quick: bool
    models: tuple[BenchModel, ...] = MODELS
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    load_before: str = field(default_factory=load_average)
    load_after: str = ""
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.versions = {
            "mlxd": f"{_version('mlxd')} (commit {mlxd_revision()})",
            "mlx": _version("mlx"),
            "mlx-lm": _version("mlx-lm"),
            "python": platform.python_version(),
            "httpx (client)": _version("httpx"),
        }

    def machine(self) -> dict[str, str]:
        """Cores, memory, CPU and OS."""
        return {
            "cores": str(os.cpu_count()),
            "memory": f"{memory_bytes() / 2**30:.1f} GiB",
            "cpu": cpu_model(),
            "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
            "load average (1 min) before / after": f"{self.load_before} / {self.load_after or load_average()}",
        }
