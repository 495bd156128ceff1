"""The systemd user unit: rendered, verified by the real systemd-analyze, and driven.

systemd is not PID 1 on the machines these tests run on (``systemctl --user`` has no
bus), so the systemctl sequences are checked against the recording shim
(tests/cli/shims/recording_shim.py), the one sanctioned stand-in for a real program in
this suite. The unit file itself is checked by the real ``systemd-analyze verify``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlxd.cli.managers.base import ServiceSpec, build_spec
from mlxd.cli.managers.systemd import UNIT, SystemdManager, parse_show, render_unit
from mlxd.cli.managers.templates import template_path
from mlxd.errors import ServiceManagerError
from tests.cli.conftest import Home, Shim, run_mlxd

SHOW = ["--user", "show", "-p", "ActiveState,SubState,MainPID,NRestarts", UNIT]
ACTIVE = "ActiveState=active\nSubState=running\nMainPID=4242\nNRestarts=2\n"
INACTIVE = "ActiveState=inactive\nSubState=dead\nMainPID=0\nNRestarts=0\n"


def rule(*args: str, exit: int = 0, stdout: str = "", stderr: str = "") -> dict[str, Any]:
    return {"args": ["--user", *args], "exit": exit, "stdout": stdout, "stderr": stderr}


@pytest.fixture
def spec(home: Home) -> ServiceSpec:
    return build_spec(home.config, drain_timeout_s=30.0)


@pytest.fixture
def systemd(home: Home) -> SystemdManager:
    return SystemdManager()


def sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """The unit's ``[Section]`` → ``(key, value)`` pairs, comments skipped."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            out[current] = []
            continue
        key, _, value = line.partition("=")
        out[current].append((key, value))
    return out


def verify(unit_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The real ``systemd-analyze verify --user``; it exits 0 on warnings, so callers check stderr."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    runtime.chmod(0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    return subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit_dir / UNIT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


# --- rendering ------------------------------------------------------------------------


def test_rendered_unit_has_every_key_with_absolute_paths(spec: ServiceSpec) -> None:
    unit = sections(render_unit(spec))
    assert dict(unit["Unit"])["StartLimitIntervalSec"] == "120"
    assert dict(unit["Unit"])["StartLimitBurst"] == "5"
    service = dict(unit["Service"])
    assert service["Type"] == "simple"
    assert service["ExecStart"] == f"{sys.executable} -m mlxd serve --config {spec.config}"
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"] == "10"
    assert int(service["TimeoutStopSec"]) > spec.drain_timeout_s
    assert service["KillSignal"] == "SIGTERM"
    assert service["UMask"] == "0077"
    assert Path(service["WorkingDirectory"]).is_absolute()
    environment = [value for key, value in unit["Service"] if key == "Environment"]
    assert "PYTHONUNBUFFERED=1" in environment
    assert "MLXD_SUPERVISED=1" in environment
    assert any(v.startswith('"PATH=/') for v in environment)
    assert dict(unit["Install"])["WantedBy"] == "default.target"


def test_the_shells_hub_location_and_settings_go_with_the_unit(spec: ServiceSpec, tmp_path: Path) -> None:
    """A user unit starts with the user manager's environment, not the shell's."""
    passing = dataclasses.replace(spec, env=(("HF_HOME", "/srv/hf cache"), ("MLXD_SERVER__PORT", "9000")))
    environment = [value for key, value in sections(render_unit(passing))["Service"] if key == "Environment"]
    assert environment[0].startswith('"PATH=/')
    assert environment[0].endswith('" "HF_HOME=/srv/hf cache" "MLXD_SERVER__PORT=9000"')


def test_no_value_line_carries_a_comment(spec: ServiceSpec) -> None:
    for line in render_unit(spec).splitlines():
        if "=" in line and not line.startswith("#"):
            assert "#" not in line, line


def test_rendered_unit_matches_the_deploy_template(spec: ServiceSpec) -> None:
    template = template_path("systemd", UNIT).read_text().splitlines()
    rendered = render_unit(spec).splitlines()
    assert len(rendered) == len(template)
    for tmpl, out in zip(template, rendered, strict=True):
        if "@" in tmpl:
            assert re.sub(r"@[A-Z_]+@", "", tmpl).split("=")[0] == out.split("=")[0]
            assert not re.search(r"@[A-Z_]+@", out)
        else:
            assert out == tmpl


@needs_systemd_analyze
def test_systemd_analyze_verifies_the_unit(spec: ServiceSpec, tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    (unit_dir / UNIT).write_text(render_unit(spec))
    result = verify(unit_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@needs_systemd_analyze
def test_awkward_paths_are_quoted_and_escaped(home: Home, tmp_path: Path) -> None:
    config = tmp_path / "my models %h $HOME" / "mlxd.toml"
    config.parent.mkdir()
    config.write_text("")
    manager = SystemdManager()
    spec = build_spec(config)
    manager.write_file(spec)
    assert manager.recorded_config() == config
    result = verify(manager.service_file().parent, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


# --- systemctl sequences --------------------------------------------------------------


def test_parse_show() -> None:
    assert parse_show(ACTIVE) == {
        "ActiveState": "active",
        "SubState": "running",
        "MainPID": "4242",
        "NRestarts": "2",
    }


def test_state(systemd: SystemdManager, shim: Shim) -> None:
    shim.answer(rule("show", stdout=ACTIVE))
    state = systemd.state()
    assert (state.loaded, state.running, state.pid) == (True, True, 4242)
    assert "2 restarts" in state.detail
    shim.answer(rule("show", stdout=INACTIVE))
    state = systemd.state()
    assert (state.loaded, state.running, state.pid) == (False, False, None)
    assert shim.calls() == [SHOW, SHOW]


def test_install_writes_the_unit_reloads_and_enables_now(
    systemd: SystemdManager, shim: Shim, spec: ServiceSpec, home: Home
) -> None:
    shim.answer(rule("show", stdout=INACTIVE))
    path = systemd.install(spec, timeout_s=5)
    assert path == Path(home.env["XDG_CONFIG_HOME"]) / "systemd" / "user" / UNIT
    assert path.read_text() == render_unit(spec)
    assert shim.calls() == [SHOW, ["--user", "daemon-reload"], ["--user", "enable", "--now", UNIT]]


def test_reinstall_restarts_a_running_daemon(systemd: SystemdManager, shim: Shim, spec: ServiceSpec) -> None:
    shim.answer(rule("show", stdout=ACTIVE))
    systemd.install(spec, timeout_s=5)
    assert shim.calls()[-1] == ["--user", "restart", UNIT]


def test_install_without_a_user_bus_fails_with_systemctls_words(
    systemd: SystemdManager, shim: Shim, spec: ServiceSpec
) -> None:
    no_bus = "Failed to connect to bus: No medium found\n"
    shim.answer(rule(exit=1, stderr=no_bus))
    with pytest.raises(ServiceManagerError, match="Failed to connect to bus") as caught:
        systemd.install(spec, timeout_s=5)
    assert not systemd.service_file().exists()  # start/stop must not pick systemd now
    assert caught.value.hint is not None
    assert "loginctl enable-linger" in caught.value.hint


def test_install_without_a_user_bus_tells_what_to_do(home: Home, shim: Shim) -> None:
    # The message systemctl gives on this very machine (no user session bus).
    shim.answer(rule(exit=1, stderr="Failed to connect to bus: No medium found\n"))
    done = run_mlxd("install", "--manager", "systemd")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == "error: `--user daemon-reload` failed: Failed to connect to bus: No medium found"
    assert lines[1].startswith("hint: systemd user services need your login session")
    assert "loginctl enable-linger $USER" in lines[1]
    assert "mlxd start" in lines[1]
    assert len(lines) == 2


def test_a_failed_reinstall_keeps_the_unit_that_was_installed(
    systemd: SystemdManager, shim: Shim, spec: ServiceSpec
) -> None:
    systemd.write_file(spec)
    shim.answer(rule(exit=1, stderr="Failed to connect to bus: No medium found\n"))
    with pytest.raises(ServiceManagerError):
        systemd.install(spec, timeout_s=5)
    assert systemd.service_file().exists()  # only a file this install created is undone


def test_start_stop_restart(systemd: SystemdManager, shim: Shim, spec: ServiceSpec) -> None:
    shim.answer(rule("show", stdout=ACTIVE))
    systemd.start(spec)
    assert systemd.stop(timeout_s=5) is True
    systemd.restart(spec, timeout_s=5)
    assert shim.calls() == [
        ["--user", "start", UNIT],
        SHOW,
        ["--user", "stop", UNIT],
        ["--user", "restart", UNIT],
    ]


def test_stop_when_not_loaded_succeeds(systemd: SystemdManager, shim: Shim) -> None:
    shim.answer(rule("show", stdout=INACTIVE), rule("stop", exit=5))
    assert systemd.stop(timeout_s=5) is False


def test_failed_start_reports_systemctl(systemd: SystemdManager, shim: Shim, spec: ServiceSpec) -> None:
    shim.answer(rule("start", exit=1, stderr="Job for mlxd.service failed.\n"))
    with pytest.raises(ServiceManagerError, match=r"Job for mlxd\.service failed"):
        systemd.start(spec)


def test_uninstall_disables_removes_and_reloads(
    systemd: SystemdManager, shim: Shim, spec: ServiceSpec
) -> None:
    systemd.write_file(spec)
    assert systemd.uninstall(timeout_s=5) is True
    assert not systemd.service_file().exists()
    assert shim.calls() == [["--user", "disable", "--now", UNIT], ["--user", "daemon-reload"]]
    assert systemd.uninstall(timeout_s=5) is False


def test_journal_command(systemd: SystemdManager, shim: Shim) -> None:
    assert systemd.journal_argv(20, follow=True) == [
        str(shim.path),
        "--user",
        "-u",
        "mlxd",
        "-n",
        "20",
        "--no-pager",
        "-f",
    ]
