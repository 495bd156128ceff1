"""The LaunchAgent: the rendered plist, and the launchctl sequences it is driven with.

launchd cannot run on Linux, so the sequences are checked against the recording shim
(tests/cli/shims/recording_shim.py), the one sanctioned stand-in for a real program
in this suite: it logs each launchctl argv and replays the exit codes real launchctl
gives (3, 5, 36, 113, per REFERENCE.md section 4).
"""

from __future__ import annotations

import os
import plistlib
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from mlxd.cli.managers.base import ServiceSpec, build_spec
from mlxd.cli.managers.launchd import LABEL, LaunchdManager, parse_print, render_plist
from mlxd.cli.managers.templates import template_path
from mlxd.errors import ServiceManagerError
from tests.cli.conftest import Home, Shim

UID = 501
GUI = f"gui/{UID}"
TARGET = f"{GUI}/{LABEL}"

PRINT_RUNNING = """gui/501/io.mlxd.daemon = {
\tactive count = 1
\tpath = /Users/me/Library/LaunchAgents/io.mlxd.daemon.plist
\ttype = LaunchAgent
\tstate = running

\tprogram = /Users/me/.venv/bin/python
\targuments = {
\t\t/Users/me/.venv/bin/python
\t\t-m
\t\tmlxd
\t\tserve
\t}

\tdefault environment = {
\t\tPATH => /usr/bin:/bin:/usr/sbin:/sbin
\t}

\tdomain = gui/501 [100005]
\tminimum runtime = 10
\texit timeout = 35
\truns = 3
\tpid = 4242
\timmediate reason = speculative
\tlast exit code = 78: EX_CONFIG

\tendpoints = {
\t\t"io.mlxd.probe" = {
\t\t\tstate = waiting
\t\t\tpid = 1
\t\t}
\t}
}
"""

PRINT_NOT_RUNNING = """gui/501/io.mlxd.daemon = {
\tstate = not running
\truns = 0
\tlast exit code = (never exited)
}
"""


@pytest.fixture
def spec(home: Home) -> ServiceSpec:
    return build_spec(home.config, drain_timeout_s=30.0)


@pytest.fixture
def launchd(home: Home) -> LaunchdManager:
    manager = LaunchdManager(uid=UID)
    manager.poll_interval_s = 0.01
    return manager


def rule(*args: str, exit: int = 0, stdout: str = "", times: int | None = None) -> dict[str, Any]:
    return {"args": list(args), "exit": exit, "stdout": stdout, "times": times}


GUI_DOMAIN_EXISTS = rule("print", GUI)
NOT_LOADED = rule("print", TARGET, exit=113)


# --- rendering ------------------------------------------------------------------------


def test_rendered_plist_round_trips_and_has_every_key(spec: ServiceSpec) -> None:
    text = render_plist(spec)
    plist = plistlib.loads(text.encode())
    assert plistlib.loads(plistlib.dumps(plist)) == plist

    assert plist["Label"] == LABEL
    args = plist["ProgramArguments"]
    assert args[:4] == [sys.executable, "-m", "mlxd", "serve"]
    assert args[4:] == ["--config", str(spec.config)]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] == 10
    assert isinstance(plist["ExitTimeOut"], int)
    assert plist["ExitTimeOut"] > spec.drain_timeout_s
    assert plist["ProcessType"] == "Interactive"
    assert plist["Umask"] == 0o077 == 63
    assert plist["SoftResourceLimits"] == {"NumberOfFiles": 4096}
    env = plist["EnvironmentVariables"]
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MLXD_SUPERVISED"] == "1"
    assert str(Path(sys.executable).parent) == env["PATH"].split(":")[0]
    assert {"/usr/bin", "/bin"} <= set(env["PATH"].split(":"))
    # launchd expands neither ~ nor $VAR: every path must be absolute already.
    for key in ("WorkingDirectory", "StandardOutPath", "StandardErrorPath"):
        assert Path(plist[key]).is_absolute(), key
        assert "~" not in plist[key]
        assert "$" not in plist[key]
    assert all(Path(p).is_absolute() for p in (args[0], args[5]))


def test_rendered_plist_matches_the_deploy_template(spec: ServiceSpec) -> None:
    template = plistlib.loads(template_path("launchd", f"{LABEL}.plist").read_bytes())
    rendered = plistlib.loads(render_plist(spec).encode())

    def same_shape(tmpl: Any, out: Any, where: str) -> None:
        if isinstance(tmpl, dict):
            assert isinstance(out, dict), where
            # The installing shell's Hub and MLXD_ settings come after the template's own.
            passed = len(out) - len(tmpl) if where == "plist.EnvironmentVariables" else 0
            assert list(out)[: len(out) - passed] == list(tmpl), where
            for key in tmpl:
                same_shape(tmpl[key], out[key], f"{where}.{key}")
        elif isinstance(tmpl, list):
            fixed = [item for item in tmpl if item != "@SERVE_ARGS@"]
            assert len(out) >= len(fixed), where
            for index, item in enumerate(fixed):
                same_shape(item, out[index], f"{where}[{index}]")
        elif isinstance(tmpl, str) and tmpl.startswith("@") and tmpl.endswith("@"):
            assert "@" not in str(out), f"{where} left unfilled"
        else:
            assert out == tmpl, where

    same_shape(template, rendered, "plist")


def test_the_shells_hub_location_and_settings_go_with_the_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LaunchAgent starts without the shell's environment: a model pulled under the
    shell's HF_HOME, or a port moved by MLXD_SERVER__PORT, must hold for the daemon too."""
    passed = {"HF_HOME": "/Volumes/SSD/hf", "MLXD_SERVER__PORT": "9000", "XDG_CACHE_HOME": "/c"}
    withheld = {"MLXD_SERVER__API_KEY": "sk-secret", "HF_TOKEN": "hf_secret", "MLXD_LAUNCHCTL": "/x"}
    for name, value in {**passed, **withheld}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    spec = build_spec(None, working_dir=tmp_path, log_dir=tmp_path)
    environment = plistlib.loads(render_plist(spec).encode())["EnvironmentVariables"]
    assert {name: environment.get(name) for name in passed} == passed
    assert not set(withheld) & set(environment)
    assert environment["MLXD_SUPERVISED"] == "1"  # the template's own stay


def test_no_config_file_means_no_config_option(tmp_path: Path) -> None:
    plain = build_spec(None, working_dir=tmp_path, log_dir=tmp_path)
    assert plistlib.loads(render_plist(plain).encode())["ProgramArguments"][3:] == ["serve"]
    demo = build_spec(None, demo=True, working_dir=tmp_path, log_dir=tmp_path)
    assert plistlib.loads(render_plist(demo).encode())["ProgramArguments"][-1] == "--demo"


def test_recorded_config_reads_the_installed_plist(launchd: LaunchdManager, spec: ServiceSpec) -> None:
    assert launchd.recorded_config() is None
    launchd.write_file(spec)
    assert launchd.recorded_config() == spec.config


# --- print parsing --------------------------------------------------------------------


def test_parse_print_takes_the_outermost_fields() -> None:
    fields = parse_print(PRINT_RUNNING)
    assert fields == {"state": "running", "pid": "4242", "last exit code": "78: EX_CONFIG"}


def test_state_parses_running_and_not_running(launchd: LaunchdManager, shim: Shim) -> None:
    shim.answer(GUI_DOMAIN_EXISTS, rule("print", TARGET, stdout=PRINT_RUNNING))
    state = launchd.state()
    assert (state.loaded, state.running, state.pid, state.last_exit) == (True, True, 4242, 78)

    shim.answer(GUI_DOMAIN_EXISTS, rule("print", TARGET, stdout=PRINT_NOT_RUNNING))
    state = LaunchdManager(uid=UID).state()
    assert (state.loaded, state.running, state.pid, state.last_exit) == (True, False, None, None)

    shim.answer(GUI_DOMAIN_EXISTS, NOT_LOADED)
    assert LaunchdManager(uid=UID).state().loaded is False


def test_state_survives_unparseable_output(launchd: LaunchdManager, shim: Shim) -> None:
    shim.answer(GUI_DOMAIN_EXISTS, rule("print", TARGET, stdout="something else entirely\n"))
    state = launchd.state()
    assert state.loaded is True
    assert state.running is False
    assert state.pid is None


# --- launchctl sequences --------------------------------------------------------------


def test_without_a_gui_session_it_uses_the_user_domain(
    launchd: LaunchdManager, shim: Shim, spec: ServiceSpec
) -> None:
    shim.answer(rule("print", GUI, exit=113), rule("print", f"user/{UID}/{LABEL}", exit=113))
    launchd.install(spec, timeout_s=1)
    assert shim.calls()[-2:] == [
        ["enable", f"user/{UID}/{LABEL}"],
        ["bootstrap", f"user/{UID}", str(launchd.service_file())],
    ]


def test_install_writes_the_plist_then_enables_and_bootstraps(
    launchd: LaunchdManager, shim: Shim, spec: ServiceSpec, home: Home
) -> None:
    shim.answer(GUI_DOMAIN_EXISTS, NOT_LOADED)
    path = launchd.install(spec, timeout_s=1)
    assert path == Path(home.env["HOME"]) / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    assert plistlib.loads(path.read_bytes())["Label"] == LABEL
    assert shim.calls() == [
        ["print", GUI],
        ["print", TARGET],
        ["enable", TARGET],
        ["bootstrap", GUI, str(path)],
    ]
    assert spec.log_dir.is_dir()
    assert spec.working_dir.is_dir()


def test_reinstall_boots_out_the_loaded_job_and_waits_first(
    launchd: LaunchdManager, shim: Shim, spec: ServiceSpec
) -> None:
    # print: loaded (the check), still loaded (draining), then 113: gone.
    shim.answer(GUI_DOMAIN_EXISTS, rule("print", TARGET, times=2), NOT_LOADED)
    launchd.install(spec, timeout_s=2)
    assert shim.calls()[1:] == [
        ["print", TARGET],
        ["bootout", TARGET],
        ["print", TARGET],
        ["print", TARGET],
        ["enable", TARGET],
        ["bootstrap", GUI, str(launchd.service_file())],
    ]


def test_bootstrap_5_boots_out_waits_and_retries(
    launchd: LaunchdManager, shim: Shim, spec: ServiceSpec
) -> None:
    shim.answer(
        GUI_DOMAIN_EXISTS,
        rule("print", TARGET, exit=113, times=1),
        rule("bootstrap", exit=5, times=1),
        NOT_LOADED,
    )
    launchd.install(spec, timeout_s=2)
    plist = str(launchd.service_file())
    assert shim.calls()[2:] == [
        ["enable", TARGET],
        ["bootstrap", GUI, plist],
        ["bootout", TARGET],
        ["print", TARGET],
        ["bootstrap", GUI, plist],
    ]


def test_failed_install_reports_launchctl_and_leaves_no_plist(
    launchd: LaunchdManager, shim: Shim, spec: ServiceSpec
) -> None:
    shim.answer(
        GUI_DOMAIN_EXISTS,
        NOT_LOADED,
        {"args": ["bootstrap"], "exit": 1, "stderr": "Bootstrap failed: 1: Operation not permitted\n"},
    )
    with pytest.raises(ServiceManagerError, match="Operation not permitted"):
        launchd.install(spec, timeout_s=1)
    assert not launchd.service_file().exists()


def test_start_bootstraps_a_job_that_is_not_loaded(
    launchd: LaunchdManager, shim: Shim, spec: ServiceSpec
) -> None:
    launchd.write_file(spec)
    shim.answer(GUI_DOMAIN_EXISTS, NOT_LOADED)
    launchd.start(spec)
    assert shim.calls()[1:] == [
        ["print", TARGET],
        ["enable", TARGET],
        ["bootstrap", GUI, str(launchd.service_file())],
    ]


def test_start_and_restart_make_the_directories_the_plist_names(
    launchd: LaunchdManager, shim: Shim, spec: ServiceSpec
) -> None:
    """A cleaner app (or a user) removed them: launchd would not start a job whose working
    or log directory is missing, and says nothing the CLI could show."""
    launchd.write_file(spec)
    for directory in (spec.log_dir, spec.working_dir):  # on Linux the first is in the second
        shutil.rmtree(directory, ignore_errors=True)
    shim.answer(GUI_DOMAIN_EXISTS)
    launchd.start(spec)
    assert spec.working_dir.is_dir()
    assert spec.log_dir.is_dir()
    shutil.rmtree(spec.log_dir)
    shim.answer(GUI_DOMAIN_EXISTS, rule("bootout", exit=3))
    launchd.restart(spec, timeout_s=1)
    assert spec.log_dir.is_dir()


def test_the_plist_is_written_readable_by_all_and_writable_by_its_owner_only(
    launchd: LaunchdManager, spec: ServiceSpec
) -> None:
    old = os.umask(0o002)  # a group-writable default, which launchd may refuse for an agent
    try:
        path, _ = launchd.write_file(spec)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_start_kickstarts_a_loaded_job(launchd: LaunchdManager, shim: Shim, spec: ServiceSpec) -> None:
    shim.answer(GUI_DOMAIN_EXISTS)
    launchd.start(spec)
    assert shim.calls()[1:] == [["print", TARGET], ["kickstart", TARGET]]


def test_stop_boots_out_and_waits_for_113(launchd: LaunchdManager, shim: Shim) -> None:
    shim.answer(GUI_DOMAIN_EXISTS, rule("print", TARGET, times=2), NOT_LOADED)
    assert launchd.stop(timeout_s=2) is True
    assert shim.calls()[1:] == [
        ["bootout", TARGET],
        ["print", TARGET],
        ["print", TARGET],
        ["print", TARGET],
    ]


@pytest.mark.parametrize("code", [3, 5])
def test_stop_when_not_loaded_succeeds(launchd: LaunchdManager, shim: Shim, code: int) -> None:
    shim.answer(GUI_DOMAIN_EXISTS, rule("bootout", exit=code), NOT_LOADED)
    assert launchd.stop(timeout_s=1) is False
    # 5 is also a plain I/O error: launchd is asked whether the job is still there.
    assert shim.calls()[1:] == [["bootout", TARGET]] + ([["print", TARGET]] if code == 5 else [])


def test_a_bootout_that_fails_with_5_while_loaded_is_an_error(launchd: LaunchdManager, shim: Shim) -> None:
    shim.answer(
        GUI_DOMAIN_EXISTS,
        {"args": ["bootout"], "exit": 5, "stderr": "Boot-out failed: 5: Input/output error\n"},
    )
    with pytest.raises(ServiceManagerError, match="Input/output error"):
        launchd.stop(timeout_s=1)


def test_stop_while_draining_36_waits(launchd: LaunchdManager, shim: Shim) -> None:
    shim.answer(GUI_DOMAIN_EXISTS, rule("bootout", exit=36), rule("print", TARGET, times=1), NOT_LOADED)
    assert launchd.stop(timeout_s=2) is True
    assert shim.calls()[1:] == [["bootout", TARGET], ["print", TARGET], ["print", TARGET]]


def test_stop_that_never_finishes_is_an_error(
    launchd: LaunchdManager, shim: Shim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mlxd.cli.managers.launchd.KILL_WAIT_S", 0.2)  # beyond the stop timeout
    shim.answer(GUI_DOMAIN_EXISTS)  # print keeps answering 0: the job never goes away
    with pytest.raises(ServiceManagerError, match="still stopping"):
        launchd.stop(timeout_s=0.3)


def test_restart_drains_then_bootstraps(launchd: LaunchdManager, shim: Shim, spec: ServiceSpec) -> None:
    """Never ``kickstart -k`` (SIGKILL): bootout gives the daemon SIGTERM and its drain."""
    launchd.write_file(spec)
    shim.answer(GUI_DOMAIN_EXISTS, rule("print", TARGET, times=1), NOT_LOADED)
    launchd.restart(spec, timeout_s=1)
    assert shim.calls()[1:] == [
        ["bootout", TARGET],
        ["print", TARGET],
        ["print", TARGET],
        ["enable", TARGET],
        ["bootstrap", GUI, str(launchd.service_file())],
    ]
    assert not any("kickstart" in call for call in shim.calls())


def test_restart_of_a_job_not_loaded_bootstraps_it(
    launchd: LaunchdManager, shim: Shim, spec: ServiceSpec
) -> None:
    launchd.write_file(spec)
    shim.answer(GUI_DOMAIN_EXISTS, rule("bootout", exit=3))
    launchd.restart(spec, timeout_s=1)
    assert shim.calls()[1:] == [
        ["bootout", TARGET],
        ["enable", TARGET],
        ["bootstrap", GUI, str(launchd.service_file())],
    ]


def test_uninstall_boots_out_and_removes_the_plist(
    launchd: LaunchdManager, shim: Shim, spec: ServiceSpec
) -> None:
    launchd.write_file(spec)
    shim.answer(GUI_DOMAIN_EXISTS, NOT_LOADED)
    assert launchd.uninstall(timeout_s=1) is True
    assert not launchd.service_file().exists()
    assert shim.calls()[1:] == [["bootout", TARGET], ["print", TARGET]]
    shim.reset()
    assert launchd.uninstall(timeout_s=1) is False  # not installed: nothing to do
    assert shim.calls() == []
