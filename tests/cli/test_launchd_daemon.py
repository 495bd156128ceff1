"""The login service on macOS with a real daemon: ``mlxd install`` and the commands after it.

launchd cannot run here, so ``shims/launchd_shim.py`` stands in for launchctl and launches
the plist's program as launchd would (its environment, working directory, log files); the
daemon, the CLI and the HTTP checks are real.
"""

from __future__ import annotations

import contextlib
import json
import os
import plistlib
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlxd.cli.managers.launchd import LABEL
from tests.cli.conftest import Home, free_port, run_mlxd

LAUNCHD_SHIM = Path(__file__).parent / "shims" / "launchd_shim.py"
RUNNING = re.compile(r"mlxd is running at (\S+) \(launchd, pid (\d+)\)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _started_pid(stdout: str, home: Home) -> int:
    match = RUNNING.search(stdout)
    assert match is not None, stdout
    assert match.group(1) == home.url
    return int(match.group(2))


@pytest.fixture
def launchd(home: Home, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """``home`` with launchctl standing in for launchd; every job it launched is gone after."""
    wrapper = home.root / "shim-bin" / "launchctl"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I -S "{LAUNCHD_SHIM}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    state = home.root / "launchd"
    monkeypatch.setenv("MLXD_LAUNCHCTL", str(wrapper))
    monkeypatch.setenv("MLXD_SHIM_STATE", str(state))
    yield home
    for job in state.glob("*.json"):
        pid = json.loads(job.read_text()).get("pid")
        if pid and _alive(pid):
            os.kill(pid, 9)


def _plist(home: Home) -> Path:
    return Path(home.env["HOME"]) / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def _status(home: Home) -> tuple[int, dict[str, object]]:
    result = run_mlxd("status", "--json")
    return result.returncode, json.loads(result.stdout)


def test_install_waits_for_the_daemon_and_every_command_follows_the_service(launchd: Home) -> None:
    home = launchd
    installed = run_mlxd("install", "--manager", "launchd")
    assert installed.returncode == 0, installed.stderr
    first = _started_pid(installed.stdout, home)
    assert f"installed {_plist(home)}" in installed.stdout
    assert httpx.get(f"{home.url}/health").status_code == 200
    code, status = _status(home)
    assert (code, status["service"], status["running"], status["pid"]) == (0, "launchd", True, first)
    if sys.platform == "linux":  # the plist's environment reached it (/proc is Linux's)
        assert b"MLXD_SUPERVISED=1" in Path(f"/proc/{first}/environ").read_bytes().split(b"\0")

    restarted = run_mlxd("restart")
    assert restarted.returncode == 0, restarted.stderr
    second = _started_pid(restarted.stdout, home)
    assert second != first
    assert not _alive(first)

    stopped = run_mlxd("stop")
    assert (stopped.returncode, stopped.stdout.strip()) == (0, "mlxd stopped")
    assert not _alive(second)
    assert _status(home)[0] == 3

    started = run_mlxd("start")
    assert started.returncode == 0, started.stderr
    third = _started_pid(started.stdout, home)

    removed = run_mlxd("uninstall")
    assert removed.returncode == 0, removed.stderr
    assert "removed the launchd service" in removed.stdout
    assert not _plist(home).exists()
    assert not _alive(third)
    assert _status(home)[1]["service"] == "none"


def test_install_reports_a_daemon_that_fails_at_once_and_restart_recovers(launchd: Home) -> None:
    home = launchd
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", home.port))
        taken.listen()
        began = time.monotonic()
        installed = run_mlxd("install", "--manager", "launchd")
        waited = time.monotonic() - began
    assert installed.returncode == 1
    assert "installed as a launchd service but did not start" in installed.stderr
    assert f"port {home.port} is in use" in installed.stderr
    assert "mlxd restart" in installed.stderr  # the hint
    assert "Traceback" not in installed.stderr
    assert waited < 25, "it waited for the timeout instead of reading the daemon's failure"
    assert _plist(home).is_file()  # installed: fixed, it starts at the next login or restart

    restarted = run_mlxd("restart")
    assert restarted.returncode == 0, restarted.stderr
    _started_pid(restarted.stdout, home)
    assert run_mlxd("uninstall").returncode == 0


def test_install_no_wait_does_not_wait_for_the_daemon(launchd: Home) -> None:
    home = launchd
    with socket.socket() as taken:  # the daemon cannot start: only --no-wait makes this exit 0
        taken.bind(("127.0.0.1", home.port))
        taken.listen()
        installed = run_mlxd("install", "--manager", "launchd", "--no-wait")
    assert installed.returncode == 0, installed.stderr
    assert f"starts mlxd now and at every login ({home.url}" in installed.stdout
    assert RUNNING.search(installed.stdout) is None
    plist = plistlib.loads(_plist(home).read_bytes())
    assert plist["ProgramArguments"][0] == str(Path(sys.executable).absolute())
    assert run_mlxd("uninstall").returncode == 0


def test_install_waits_where_the_config_says_not_where_a_detached_daemon_ran(launchd: Home) -> None:
    home = launchd
    started = run_mlxd("start")  # detached, on the config's port
    assert started.returncode == 0, started.stderr
    detached = int(re.search(r"pid (\d+)", started.stdout).group(1))  # type: ignore[union-attr]
    moved = free_port()
    home.config.write_text(home.config.read_text().replace(f"port = {home.port}", f"port = {moved}"))
    installed = run_mlxd("install", "--manager", "launchd")
    assert installed.returncode == 0, installed.stderr
    assert f"stopped the detached daemon (pid {detached}) first" in installed.stdout
    assert f"mlxd is running at http://127.0.0.1:{moved} (launchd" in installed.stdout
    assert not _alive(detached)
    assert run_mlxd("uninstall").returncode == 0


def test_install_again_while_the_service_runs_replaces_its_daemon(launchd: Home) -> None:
    home = launchd
    first = run_mlxd("install", "--manager", "launchd")
    assert first.returncode == 0, first.stderr
    again = run_mlxd("install", "--manager", "launchd")
    assert again.returncode == 0, again.stderr  # its own daemon is no terminal's
    assert _started_pid(again.stdout, home) != _started_pid(first.stdout, home)
    assert run_mlxd("uninstall").returncode == 0


def test_install_is_refused_while_a_daemon_runs_in_a_terminal(launchd: Home) -> None:
    home = launchd
    serving = subprocess.Popen(
        [sys.executable, "-m", "mlxd", "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline, answered = time.monotonic() + 60, False
        while not answered and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                answered = httpx.get(f"{home.url}/health").status_code == 200
            time.sleep(0.1)
        assert answered, "the terminal's daemon did not start"
        installed = run_mlxd("install", "--manager", "launchd")
        assert installed.returncode == 1
        lines = installed.stderr.splitlines()
        assert (
            lines[0]
            == f"error: mlxd (pid {serving.pid}) is already running at {home.url}, outside any service manager"
        )
        assert "stop it first" in lines[1]
        assert not _plist(home).exists()  # nothing written
        assert serving.poll() is None  # and the terminal's daemon left alone
    finally:
        serving.terminate()
        serving.wait(timeout=30)
