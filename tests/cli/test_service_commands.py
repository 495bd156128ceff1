"""The daemon-control commands end to end through the CLI, with no daemon running.

Where a command drives launchctl or systemctl, the recording shim stands in for it (launchd
and systemd cannot run on Linux), so ``install`` here does not wait for a daemon
(``--no-wait``). The commands with a real daemon are in test_process_backend.py and, through
a launchctl stand-in that launches the plist's program, test_launchd_daemon.py.
"""

from __future__ import annotations

import json
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlxd.cli.app import app
from mlxd.cli.managers.launchd import LABEL
from tests.cli.conftest import Home, Shim

runner = CliRunner()
GUI_TARGET_ARGS = ["print"]


def mlxd(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def plist_path(home: Home) -> Path:
    return Path(home.env["HOME"]) / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def launchctl_not_loaded(shim: Shim) -> None:
    """The GUI domain exists; the job is not loaded; everything else succeeds."""
    shim.answer(
        {"args": ["print", f"gui/{_uid()}"], "exit": 0},
        {"args": ["print"], "exit": 113},
        {"args": ["bootout"], "exit": 3, "stderr": "Boot-out failed: 3: No such process\n"},
    )


def _uid() -> int:
    import os

    return os.getuid()


# --- install --------------------------------------------------------------------------


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_install_dry_run_prints_the_file_and_does_nothing_else(home: Home, shim: Shim, manager: str) -> None:
    # A real subprocess: `mlxd install --dry-run --manager launchd` must work on Linux too.
    result = subprocess.run(
        [sys.executable, "-m", "mlxd", "install", "--dry-run", "--manager", manager],
        capture_output=True,
        text=True,
        env=home.env | {"PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if manager == "launchd":
        plist = plistlib.loads(result.stdout.encode())
        assert plist["ProgramArguments"][-2:] == ["--config", str(home.config.resolve())]
    else:
        assert f"--config {home.config.resolve()}" in result.stdout
        assert result.stdout.startswith("#")
        assert "[Service]" in result.stdout
    assert shim.calls() == []
    assert not plist_path(home).exists()
    assert not (Path(home.env["XDG_CONFIG_HOME"]) / "systemd").exists()


@pytest.mark.parametrize("manager", ["launchd", "systemd"])
def test_install_carries_the_shells_hub_location_and_settings_not_its_secrets(
    home: Home, shim: Shim, manager: str
) -> None:
    shell = {"HF_HOME": "/Volumes/SSD/hf", "MLXD_SERVER__PORT": "9000", "MLXD_SERVER__API_KEY": "sk-xyz"}
    result = subprocess.run(
        [sys.executable, "-m", "mlxd", "install", "--dry-run", "--manager", manager],
        capture_output=True,
        text=True,
        env=home.env | {"PATH": "/usr/bin:/bin"} | shell,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "/Volumes/SSD/hf" in result.stdout
    assert "MLXD_SERVER__PORT" in result.stdout
    assert "sk-xyz" not in result.stdout
    assert "API_KEY" not in result.stdout


def test_install_launchd_writes_and_bootstraps(home: Home, shim: Shim) -> None:
    launchctl_not_loaded(shim)
    code, out, err = mlxd("install", "--manager", "launchd", "--no-wait")
    assert code == 0, err
    assert plist_path(home).is_file()
    assert "installed" in out
    assert home.url in out
    calls = shim.calls()
    assert calls[-2:] == [
        ["enable", f"gui/{_uid()}/{LABEL}"],
        ["bootstrap", f"gui/{_uid()}", str(plist_path(home))],
    ]


def test_install_that_gets_no_answer_in_time_exits_1_and_stays_installed(home: Home, shim: Shim) -> None:
    launchctl_not_loaded(shim)  # launchd's stand-in here starts nothing: the daemon never answers
    code, out, err = mlxd("install", "--manager", "launchd", "--timeout", "0.5")
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == (
        f"error: mlxd is installed as a launchd service but did not start: "
        f"no answer from {home.url}/health within 0.5s"
    )
    assert lines[-1].startswith("hint: if it is still starting, `mlxd status` says when it answers")
    assert f"installed {plist_path(home)}" in out
    assert plist_path(home).is_file()


def test_install_failure_exits_1_with_the_tools_message(home: Home, shim: Shim) -> None:
    launchctl_not_loaded(shim)
    shim.answer(
        {"args": ["print", f"gui/{_uid()}"], "exit": 0},
        {"args": ["print"], "exit": 113},
        {"args": ["bootstrap"], "exit": 5, "stderr": "Bootstrap failed: 5: Input/output error\n"},
        {"args": ["bootout"], "exit": 3},
    )
    code, _, err = mlxd("install", "--manager", "launchd")
    assert code == 1
    assert "Input/output error" in err
    assert "Traceback" not in err
    assert not plist_path(home).exists()


def test_install_without_launchctl_is_one_line(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXD_LAUNCHCTL", str(home.root / "no-such-launchctl"))
    code, _, err = mlxd("install", "--manager", "launchd")
    assert code == 1
    assert "launchctl not found" in err
    assert "mlxd start" in err


@pytest.mark.parametrize(
    "command", [["install", "--manager", "systemd", "--dry-run"], ["start"], ["restart"]]
)
def test_commands_that_start_a_daemon_exit_78_on_an_invalid_config(
    home: Home, shim: Shim, command: list[str]
) -> None:
    # 78 as `mlxd serve` exits for the same file: one answer for one mistake.
    home.config.write_text("[server]\nport = 'not a port'\n")
    code, _, err = mlxd(*command)
    assert code == 78
    assert err.count("server.port") == 1
    assert "server.port" in err
    assert shim.calls() == []


# --- status, stop, uninstall with a login service installed ---------------------------


def test_status_json_with_launchd_installed_and_not_running(home: Home, shim: Shim) -> None:
    launchctl_not_loaded(shim)
    assert mlxd("install", "--manager", "launchd", "--no-wait")[0] == 0
    code, out, _ = mlxd("status", "--json")
    assert code == 3
    data = json.loads(out)
    assert list(data) == [
        "running",
        "pid",
        "url",
        "uptime_s",
        "version",
        "service",
        "config",
        "models",
        "distributed",
    ]
    assert data["running"] is False
    assert data["service"] == "launchd"
    assert data["url"] == home.url
    assert data["config"] == {
        "path": str(home.config.resolve()),
        "generation": None,
        "last_error": None,
        "restart_required": [],
    }
    assert data["models"] == []
    assert data["distributed"] is None


def test_status_answers_even_when_launchctl_fails(
    home: Home, shim: Shim, monkeypatch: pytest.MonkeyPatch
) -> None:
    launchctl_not_loaded(shim)
    assert mlxd("install", "--manager", "launchd", "--no-wait")[0] == 0
    monkeypatch.setenv("MLXD_LAUNCHCTL", str(home.root / "no-such-launchctl"))
    code, out, _ = mlxd("status")
    assert code == 3
    assert "launchctl not found" in out


@pytest.mark.parametrize("command", [["start"], ["restart"]])
def test_a_service_whose_python_is_gone_says_so_at_once(home: Home, shim: Shim, command: list[str]) -> None:
    # The virtualenv mlxd was installed from was removed or moved: launchd would relaunch a
    # program that does not exist every 10 s, and the CLI would wait for /health in vain.
    launchctl_not_loaded(shim)
    assert mlxd("install", "--manager", "launchd", "--no-wait")[0] == 0
    plist = plistlib.loads(plist_path(home).read_bytes())
    gone = home.root / "old-venv" / "bin" / "python3"
    plist["ProgramArguments"][0] = str(gone)
    plist_path(home).write_bytes(plistlib.dumps(plist))
    shim.reset()
    code, _, err = mlxd(*command, "--timeout", "20")
    assert code == 1
    assert err.splitlines()[0] == f"error: the launchd service runs {gone}, which no longer exists"
    assert "mlxd install" in err.splitlines()[1]
    assert not any(call[0] in ("bootstrap", "kickstart", "bootout") for call in shim.calls())
    code, out, _ = mlxd("status")
    assert code == 3
    assert "no longer exists" in " ".join(out.split())


@pytest.mark.parametrize("damage", [b"<?xml version=", b"not a plist at all"])
def test_a_damaged_plist_is_no_traceback(home: Home, shim: Shim, damage: bytes) -> None:
    launchctl_not_loaded(shim)
    assert mlxd("install", "--manager", "launchd", "--no-wait")[0] == 0
    plist_path(home).write_bytes(damage)
    code, out, err = mlxd("status")
    assert code == 3, err
    assert "launchd" in out
    assert "unexpected error" not in err


def test_a_refused_start_keeps_the_reason_status_shows(home: Home, shim: Shim) -> None:
    from mlxd import supervision

    launchctl_not_loaded(shim)
    assert mlxd("install", "--manager", "launchd", "--no-wait")[0] == 0
    plist = plistlib.loads(plist_path(home).read_bytes())
    plist["ProgramArguments"][0] = str(home.root / "gone" / "python3")
    plist_path(home).write_bytes(plistlib.dumps(plist))
    supervision.record_gave_up("port 8080 is in use", config=home.config)
    assert mlxd("start", "--timeout", "5")[0] == 1
    assert supervision.gave_up_reason(config=home.config) == "port 8080 is in use"


def test_status_shows_a_recent_failed_start_and_forgets_an_old_one(home: Home, shim: Shim) -> None:
    import time

    from mlxd import supervision

    assert mlxd("status")[0] == 3
    supervision.record_start_failure("port 8080 is in use by pid 4242", config=home.config)
    assert "last start" not in mlxd("status")[1]  # no service: nothing relaunches it
    launchctl_not_loaded(shim)
    assert mlxd("install", "--manager", "launchd", "--no-wait")[0] == 0
    assert "last start" not in mlxd("status")[1]  # the job is not loaded: nothing relaunches it
    shim.answer(
        {"args": ["print", f"gui/{_uid()}"], "exit": 0},
        {"args": ["print"], "exit": 0, "stdout": "state = not running\nlast exit code = 1\n"},
    )
    # launchd relaunches a daemon that failed; until the breaker gives up, status says why.
    supervision.record_start_failure("port 8080 is in use by pid 4242", config=home.config)
    code, out, _ = mlxd("status")
    assert code == 3
    assert "last start" in out
    assert "port 8080 is in use by pid 4242" in " ".join(out.split())
    supervision.clear_breaker(config=home.config)
    an_hour_ago = time.time() - 3600  # it has run well since: nothing to say now
    supervision.record_start_failure("port 8080 is in use by pid 4242", config=home.config, now=an_hour_ago)
    assert "last start" not in mlxd("status")[1]


def test_status_human_shows_the_breaker_reason(home: Home) -> None:
    from mlxd import supervision

    supervision.record_gave_up("invalid config: server.port: not a port", config=home.config)
    code, out, _ = mlxd("status")
    assert code == 3
    assert "not running" in out
    assert "gave up" in out
    assert "server.port" in out
    data = json.loads(mlxd("status", "--json")[1])
    assert data["config"]["last_error"] == "invalid config: server.port: not a port"
    assert data["service"] == "none"


def test_status_ignores_a_breaker_reason_recorded_for_another_config(home: Home) -> None:
    from mlxd import supervision

    other = home.root / "elsewhere" / "mlxd.toml"
    supervision.record_gave_up("invalid config: the other file's problem", config=other)
    code, out, _ = mlxd("status", "--json")
    assert code == 3
    assert json.loads(out)["config"]["last_error"] is None
    assert supervision.gave_up_reason(config=other) is not None  # still there for that file


def test_status_works_with_an_invalid_config(home: Home) -> None:
    home.config.write_text(f"[server]\nport = {home.port}\n[runtime]\nbogus = 1\n")
    code, out, _ = mlxd("status", "--json")
    assert code == 3
    data = json.loads(out)
    assert data["url"] == home.url  # the [server] section still names the port
    assert "bogus" in data["config"]["last_error"]


def test_stop_through_launchd_when_not_loaded(home: Home, shim: Shim) -> None:
    launchctl_not_loaded(shim)
    assert mlxd("install", "--manager", "launchd", "--no-wait")[0] == 0
    shim.reset()
    code, out, _ = mlxd("stop")
    assert code == 0
    assert "was not running" in out
    assert ["bootout", f"gui/{_uid()}/{LABEL}"] in shim.calls()


def test_start_through_launchd_times_out_with_exit_1(home: Home, shim: Shim) -> None:
    launchctl_not_loaded(shim)
    assert mlxd("install", "--manager", "launchd", "--no-wait")[0] == 0
    shim.reset()
    home.log_dir.mkdir(parents=True, exist_ok=True)
    (home.log_dir / "mlxd.log").write_text("old line\n")
    code, _, err = mlxd("start", "--timeout", "0.5")
    assert code == 1
    assert "did not start" in err
    assert "/health" in err
    assert "mlxd logs" in err  # the hint
    assert ["bootstrap", f"gui/{_uid()}", str(plist_path(home))] in shim.calls()


def test_uninstall_then_uninstall_again(home: Home, shim: Shim) -> None:
    launchctl_not_loaded(shim)
    assert mlxd("install", "--manager", "launchd", "--no-wait")[0] == 0
    code, out, _ = mlxd("uninstall")
    assert code == 0
    assert "removed the launchd service" in out
    assert not plist_path(home).exists()
    code, out, _ = mlxd("uninstall")
    assert code == 0
    assert "not installed" in out


def test_systemd_install_then_status_and_uninstall(home: Home, shim: Shim) -> None:
    shim.answer({"args": ["--user", "show"], "stdout": "ActiveState=inactive\nMainPID=0\n"})
    assert mlxd("install", "--manager", "systemd", "--no-wait")[0] == 0
    data = json.loads(mlxd("status", "--json")[1])
    assert data["service"] == "systemd"
    code, out, _ = mlxd("uninstall")
    assert code == 0
    assert "systemd" in out
    assert ["--user", "disable", "--now", "mlxd.service"] in shim.calls()


# --- nothing running -------------------------------------------------------------------


def test_stop_when_nothing_runs(home: Home) -> None:
    code, out, _ = mlxd("stop")
    assert code == 0
    assert "was not running" in out


@pytest.mark.parametrize("args", [["ps"], ["ps", "--json"], ["load", "qwen"], ["unload", "qwen"], ["reload"]])
def test_admin_commands_exit_3_when_not_running(home: Home, args: list[str]) -> None:
    code, _, err = mlxd(*args)
    assert code == 3
    assert "not running" in err
    assert "mlxd start" in err


def test_logs_shows_the_last_lines(home: Home) -> None:
    home.log_dir.mkdir(parents=True)
    (home.log_dir / "mlxd.log").write_text("".join(f"line {i}\n" for i in range(100)))
    code, out, _ = mlxd("logs", "-n", "3")
    assert code == 0
    assert out.splitlines() == ["line 97", "line 98", "line 99"]


def test_logs_without_a_log_yet(home: Home) -> None:
    code, _, err = mlxd("logs")
    assert code == 0
    assert "no log yet" in err
