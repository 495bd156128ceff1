"""A distributed daemon for tests: ``mlxd serve`` as a subprocess, its ranks on loopback.

The launcher (``mlxd serve`` with ``[distributed]``) starts two ranks through
``mlx.launch --backend ring`` on 127.0.0.1, as it would on two Macs, with HOME and the
XDG directories in a temp dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.cli.conftest import isolated_env
from tests.conftest import LOOPBACK_TLS, free_port, write_config


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports nobody listens on right now."""
    for _ in range(100):
        first = free_port()
        if first + count > 65000:
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise RuntimeError("no run of free ports")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (``ps`` works on Linux and macOS alike)."""
    table = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True, check=True)
    children: dict[int, list[int]] = {}
    for line in table.stdout.splitlines():
        child, parent = (int(v) for v in line.split())
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still exist (zombies count as gone)."""
    table = subprocess.run(["ps", "-A", "-o", "pid=,stat="], capture_output=True, text=True, check=True)
    running = {int(p) for p, stat in (line.split() for line in table.stdout.splitlines()) if "Z" not in stat}
    return pids & running


def distributed_section(*, heartbeat: str = "10s") -> str:
    return f"""
[distributed]
hosts = ["127.0.0.1", "127.0.0.1"]
port = {free_ports(2)}
heartbeat_timeout = "{heartbeat}"
start_timeout = "90s"
"""


@dataclass
class Cluster:
    """A running distributed daemon: the launcher process, its URL, config and output."""

    process: subprocess.Popen[bytes]
    url: str
    config: Path
    output: Path
    env: dict[str, str]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, verify=LOOPBACK_TLS)

    def status(self) -> dict[str, Any]:
        with self.client() as http:
            return http.get("/mlxd/status").json()  # type: ignore[no-any-return]

    def rank_pids(self) -> tuple[int, set[int]]:
        """Rank 0's pid and every process the launcher started."""
        return int(self.status()["pid"]), descendants(self.process.pid)

    def said(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal the launcher and wait for it; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in descendants(self.process.pid) | {self.process.pid}:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            raise


def start_cluster(root: Path, config_text: str, *, ranks: int = 2) -> Cluster:
    """``mlxd serve --config`` on a free port; returns once every rank has joined."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = write_config(root / "mlxd.toml", f"[server]\nport = {port}\n{config_text}")
    env = {**os.environ, **isolated_env(root), "PYTHONUNBUFFERED": "1"}
    env.pop("MLXD_CONFIG", None)
    output = root / "serve.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlxd", "serve", "--config", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=root,
        )
    cluster = Cluster(process, f"http://127.0.0.1:{port}", config, output, env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the launcher exited with {process.returncode}: {cluster.said()}")
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            if cluster.status()["distributed"]["ranks_up"] == ranks:
                return cluster
        time.sleep(0.2)
    cluster.stop(signal.SIGKILL)
    raise AssertionError(f"the ranks did not join: {cluster.said()}")
