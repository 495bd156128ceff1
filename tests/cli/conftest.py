"""Fixtures for the daemon-control commands: an isolated home and the recording shim.

Every test here runs with HOME and the XDG directories in a temp dir, and with
launchctl / systemctl / journalctl pointing at the recording shim, so nothing can touch
the real ~/Library, ~/.config or a real service manager.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SHIM = Path(__file__).parent / "shims" / "recording_shim.py"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Home:
    """The isolated environment: its root, env vars, and the config file in it."""

    root: Path
    env: dict[str, str]
    config: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_dir(self) -> Path:
        from mlxd.config import paths

        return paths.state_dir()

    @property
    def log_dir(self) -> Path:
        from mlxd.config import paths

        return paths.log_dir()


@dataclass
class Shim:
    """The recording stand-in: set what it answers, read what it was asked."""

    path: Path
    log: Path
    scenario: Path

    def answer(self, *rules: dict[str, Any]) -> None:
        """Replace the scenario: rules ``{"args": prefix, "exit", "stdout", "stderr", "times"}``."""
        self.scenario.write_text(json.dumps(list(rules)))
        self.log.with_name(self.log.name + ".used.json").unlink(missing_ok=True)

    def calls(self) -> list[list[str]]:
        """Every argv the shim received, in order."""
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def reset(self) -> None:
        """Forget the calls so far."""
        self.log.unlink(missing_ok=True)


def isolated_env(root: Path) -> dict[str, str]:
    """HOME and XDG dirs under ``root`` (platformdirs reads HOME on macOS, XDG on Linux)."""
    return {
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "home" / ".config"),
        "XDG_STATE_HOME": str(root / "home" / ".local" / "state"),
        "XDG_DATA_HOME": str(root / "home" / ".local" / "share"),
        "XDG_CACHE_HOME": str(root / "home" / ".cache"),
    }


@pytest.fixture
def shim(tmp_path: Path) -> Shim:
    """The recording shim, as an executable that runs with this interpreter."""
    bin_dir = tmp_path / "shim-bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "service-tool"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{SHIM}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return Shim(wrapper, tmp_path / "shim.log", tmp_path / "scenario.json")


@pytest.fixture
def home(tmp_path: Path, shim: Shim, monkeypatch: pytest.MonkeyPatch) -> Home:
    """An isolated HOME/XDG environment with a config on a free port, tools on the shim."""
    env = isolated_env(tmp_path)
    port = free_port()
    config = tmp_path / "project" / "mlxd.toml"
    config.parent.mkdir()
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\ndrain_timeout = "5s"\n')
    env.update(
        MLXD_CONFIG=str(config),
        MLXD_LAUNCHCTL=str(shim.path),
        MLXD_SYSTEMCTL=str(shim.path),
        MLXD_JOURNALCTL=str(shim.path),
        MLXD_SHIM_LOG=str(shim.log),
        MLXD_SHIM_SCENARIO=str(shim.scenario),
    )
    Path(env["HOME"]).mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("MLXD_") and k not in env]:
        monkeypatch.delenv(key)  # e.g. MLXD_SUPERVISED or MLXD_SERVER__PORT from the caller
    return Home(tmp_path, env, config, port)


def run_mlxd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m mlxd ARGS`` as a real subprocess in the (already isolated) environment."""
    return subprocess.run(
        [sys.executable, "-m", "mlxd", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def stops_daemon(home: Home) -> Iterator[Home]:
    """``home``, and whatever daemon a test started there is stopped afterwards."""
    yield home
    run_mlxd("stop", timeout=60)
    from mlxd import supervision

    pid = supervision.read_pid_file(home.state_dir)
    if pid is not None and supervision.is_mlxd_process(pid):
        os.kill(pid, signal.SIGKILL)
