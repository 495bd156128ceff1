"""The CLI finds a running daemon from the daemon's own run record, whatever its config file says.

A real daemon on a non-default port, then its config file broken or removed: ``status``,
``ps``, ``reload`` and ``stop`` still reach it (before the run record they looked on the
default port and said "not running").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlxd import supervision
from tests.cli.conftest import Home, run_mlxd

pytestmark = pytest.mark.server


def cli(home: Home, *args: str, with_config_env: bool) -> subprocess.CompletedProcess[str]:
    """``mlxd ARGS`` from a directory without a config, with or without ``$MLXD_CONFIG``."""
    env = dict(os.environ)
    if not with_config_env:
        env.pop("MLXD_CONFIG")
    elsewhere = home.root / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "mlxd", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=elsewhere,
        timeout=120,
        check=False,
    )


@pytest.fixture
def running(stops_daemon: Home) -> Home:
    """A detached daemon on the home's (non-default) port."""
    assert stops_daemon.port != 8080
    started = run_mlxd("start")
    assert started.returncode == 0, started.stderr
    return stops_daemon


def test_the_daemon_records_itself_and_removes_the_record_at_exit(running: Home) -> None:
    record = supervision.read_run_record(running.state_dir)
    assert record is not None
    assert record.pid == supervision.read_pid_file(running.state_dir)
    assert record.url == running.url
    assert record.config_path == running.config.resolve()
    assert record.supervised is False
    assert record.argv[0] == "serve"
    assert supervision.run_record_file(running.state_dir).stat().st_mode & 0o777 == 0o600
    assert run_mlxd("stop").returncode == 0
    assert not supervision.run_record_file(running.state_dir).exists()


#: Each breakage is asked about with and without ``$MLXD_CONFIG`` (the CLI reads the broken
#: file, or finds no config at all); the stop alternates between the two.
STOPPED_WITH_CONFIG_ENV = {"typo": False, "invalid-toml": True, "removed": False}


@pytest.mark.parametrize("breakage", ["typo", "invalid-toml", "removed"])
def test_a_broken_config_file_does_not_hide_the_running_daemon(running: Home, breakage: str) -> None:
    home = running
    if breakage == "typo":
        home.config.write_text(f"[server]\nport = {home.port}\nprot = 1\n")
    elif breakage == "invalid-toml":
        home.config.write_text("[server]\nport = 80 80\n")
    else:
        home.config.unlink()

    for with_config_env in (True, False):
        status = cli(home, "status", "--json", with_config_env=with_config_env)
        assert status.returncode == 0, status.stdout + status.stderr
        data = json.loads(status.stdout)
        assert data["running"] is True
        assert data["url"] == home.url
        assert data["pid"] == supervision.read_pid_file(home.state_dir)
        assert data["config"]["path"] == str(home.config.resolve())
        problem = {"typo": "server.prot", "invalid-toml": "not valid TOML", "removed": "not found"}[breakage]
        assert problem in data["config"]["last_error"]

        human = cli(home, "status", with_config_env=with_config_env)
        assert human.returncode == 0
        assert "running, config error: " in " ".join(human.stdout.split())

        ps = cli(home, "ps", "--json", with_config_env=with_config_env)
        assert ps.returncode == 0, ps.stderr
        assert json.loads(ps.stdout) == []

        reload = cli(home, "reload", with_config_env=with_config_env)
        assert reload.returncode == 78  # the daemon itself rejects the file, and keeps serving
        assert "old config" in reload.stderr

    with_config_env = STOPPED_WITH_CONFIG_ENV[breakage]
    stopped = cli(home, "stop", with_config_env=with_config_env)
    assert stopped.returncode == 0, stopped.stderr
    assert "mlxd stopped" in stopped.stdout
    assert cli(home, "status", with_config_env=with_config_env).returncode == 3


def test_another_config_file_is_another_daemon(running: Home) -> None:
    other = running.root / "other.toml"
    other.write_text("[server]\nport = 1\n")
    status = subprocess.run(
        [sys.executable, "-m", "mlxd", "status", "--json", "--config", str(other)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 3  # nothing runs that file: the record is not its daemon
    assert json.loads(status.stdout)["url"] == "http://127.0.0.1:1"
