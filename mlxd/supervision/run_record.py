"""The running daemon's own record of itself, so the CLI finds it without reading its config.

Once listening, ``mlxd serve`` writes ``run.json`` (0600) into the state directory: its
pid, the URL it actually bound, the config file it runs, its version, when it started,
whether a login service supervises it, and its command line. It removes the record when
it exits. The CLI reads the record first, so a daemon on a non-default port whose config
file has since become invalid or unreadable is still found (and its own report of the
problem shown), instead of being looked for on the port a broken file no longer names.

A record whose pid is gone, or is no ``mlxd serve`` any more (a reboot reused it), is
stale: reading it removes it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlxd import __version__
from mlxd.supervision.processes import is_mlxd_process
from mlxd.supervision.state import state_dir as _state_dir
from mlxd.supervision.state import write_atomic

RUN_RECORD_FILENAME = "run.json"
#: Hosts that accept connections on every address: clients connect through loopback.
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 - we connect, we do not bind


def connect_url(host: str, port: int) -> str:
    """The base URL a client on this machine uses for a daemon bound to ``host:port``."""
    if host in _ANY_ADDRESS:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


@dataclass(frozen=True)
class RunRecord:
    """What a running daemon says about itself."""

    pid: int
    url: str
    #: The config file it runs (absolute), None on built-in defaults.
    config: str | None
    version: str
    started_at: float
    #: True under launchd/systemd (``MLXD_SUPERVISED=1``).
    supervised: bool
    #: The ``mlxd`` arguments it was started with (``serve --demo …``).
    argv: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path | None:
        """The config file as a path."""
        return Path(self.config) if self.config else None

    @property
    def demo(self) -> bool:
        """Whether it serves the demo alias (a restart repeats that)."""
        return "--demo" in self.argv

    @classmethod
    def parse(cls, data: Any) -> RunRecord | None:
        """The record in a decoded ``run.json``, None when it is not one."""
        if not isinstance(data, dict):
            return None
        try:
            record = cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
        except TypeError:
            return None
        kinds = (
            isinstance(record.pid, int) and record.pid > 0,
            isinstance(record.url, str),
            record.config is None or isinstance(record.config, str),
            isinstance(record.argv, list),
        )
        return record if all(kinds) else None


def run_record_file(state_dir: Path | None = None) -> Path:
    """Where the running daemon records itself."""
    return _state_dir(state_dir) / RUN_RECORD_FILENAME


def write_run_record(
    host: str,
    port: int,
    config: Path | None,
    *,
    state_dir: Path | None = None,
) -> RunRecord:
    """Record this process as the running daemon, listening on ``host:port`` with ``config``."""
    record = RunRecord(
        pid=os.getpid(),
        url=connect_url(host, port),
        config=str(config.expanduser().resolve()) if config is not None else None,
        version=__version__,
        started_at=time.time(),
        supervised=os.environ.get("MLXD_SUPERVISED") == "1",
        argv=sys.argv[1:],
    )
    write_atomic(run_record_file(state_dir), json.dumps(asdict(record), indent=2) + "\n")
    return record


def read_run_record(state_dir: Path | None = None) -> RunRecord | None:
    """The record of the daemon running now; a stale or unreadable record is removed."""
    path = run_record_file(state_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        record = RunRecord.parse(json.loads(text))
    except ValueError:
        record = None
    if record is None or not is_mlxd_process(record.pid):
        remove_run_record(state_dir, only_pid=record.pid if record else None)
        return None
    return record


def remove_run_record(state_dir: Path | None = None, *, only_pid: int | None = None) -> None:
    """Remove the record; with ``only_pid``, only while it still names that process.

    The daemon calls it at exit with its own pid, so it never removes the record of a
    daemon started after it.
    """
    path = run_record_file(state_dir)
    if only_pid is not None:
        try:
            current = RunRecord.parse(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            current = None
        if current is not None and current.pid != only_pid:
            return
    path.unlink(missing_ok=True)
