"""The detached-process backend: pid file, stale pids, graceful stop, and the real daemon.

The first tests use a plain Python process whose command line reads ``mlxd serve``, to
pin down the pid logic on its own; the ``server`` tests run the real ``mlxd start`` /
``status`` / ``stop`` as subprocesses against a real daemon.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from mlxd import supervision
from mlxd.cli.managers.process import ProcessManager, terminate
from tests.cli.conftest import Home, run_mlxd

SLEEP_FOREVER = "import time; print('ready', flush=True); time.sleep(60)"
IGNORE_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


@pytest.fixture
def lookalike() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line is ``python -c ... mlxd serve``."""
    process = subprocess.Popen([sys.executable, "-c", SLEEP_FOREVER, "mlxd", "serve"], stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    yield process
    process.kill()
    process.wait()


def test_a_live_mlxd_pid_is_reported_and_stopped(home: Home, lookalike: subprocess.Popen[bytes]) -> None:
    manager = ProcessManager()
    supervision.write_pid_file(lookalike.pid, manager.state_dir)
    assert manager.live_pid() == lookalike.pid
    assert manager.state().running
    assert manager.stop(timeout_s=5) is True
    assert lookalike.wait(timeout=5) == -signal.SIGTERM
    assert manager.live_pid() is None
    assert not supervision.pid_file(manager.state_dir).exists()
    assert manager.stop(timeout_s=5) is False  # not running: nothing to do


def test_a_stale_pid_file_means_not_running(home: Home) -> None:
    manager = ProcessManager()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    supervision.write_pid_file(int(gone.stdout), manager.state_dir)
    assert manager.state().running is False
    assert manager.stop(timeout_s=1) is False
    assert not supervision.pid_file(manager.state_dir).exists()


def test_terminate_kills_what_ignores_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", IGNORE_SIGTERM, "mlxd", "serve"], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    started = time.monotonic()
    assert terminate(process.pid, timeout_s=0.5, interval_s=0.05) is False
    assert process.wait(timeout=5) == -signal.SIGKILL
    assert time.monotonic() - started < 5


def test_recorded_config_comes_from_the_live_daemons_run_record(
    home: Home, lookalike: subprocess.Popen[bytes]
) -> None:
    manager = ProcessManager()
    supervision.write_run_record("127.0.0.1", home.port, home.config, state_dir=manager.state_dir)
    path = supervision.run_record_file(manager.state_dir)
    path.write_text(json.dumps({**json.loads(path.read_text()), "pid": lookalike.pid}))
    assert manager.recorded_config() is None  # no pid file: not the detached daemon's record
    supervision.write_pid_file(lookalike.pid, manager.state_dir)
    assert manager.recorded_config() == home.config.resolve()


# --- the real daemon, through the real CLI --------------------------------------------


def health(url: str) -> int:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code
    except httpx.HTTPError:
        return 0


@pytest.mark.server
def test_start_status_request_logs_stop(stops_daemon: Home) -> None:
    home = stops_daemon
    started = run_mlxd("start", "--demo")
    assert started.returncode == 0, started.stderr
    assert home.url in started.stdout
    pid = supervision.read_pid_file(home.state_dir)
    assert pid is not None
    assert supervision.is_mlxd_process(pid)

    assert run_mlxd("status").returncode == 0
    status = run_mlxd("status", "--json")
    assert status.returncode == 0
    data = json.loads(status.stdout)
    assert data["running"] is True
    assert data["pid"] == pid
    assert data["service"] == "process"
    assert data["url"] == home.url
    assert data["config"]["path"] == str(home.config.resolve())
    assert data["config"]["generation"] == 1

    reply = httpx.post(
        f"{home.url}/v1/chat/completions",
        json={"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1
    models = json.loads(run_mlxd("status", "--json").stdout)["models"]
    assert [m["alias"] for m in models] == ["demo"]

    logs = run_mlxd("logs", "-n", "5")
    assert logs.returncode == 0
    assert 1 <= len(logs.stdout.splitlines()) <= 5

    # A daemon that is alive but does not answer (here: stopped) is not "not running".
    os.kill(pid, signal.SIGSTOP)
    try:
        silent = run_mlxd("status")
        silent_json = run_mlxd("status", "--json")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert silent.returncode == 3, silent.stdout  # not running, as the contract has it
    assert f"not answering (pid {pid} is alive" in " ".join(silent.stdout.split())
    assert (json.loads(silent_json.stdout)["running"], json.loads(silent_json.stdout)["pid"]) == (False, pid)
    deadline = time.monotonic() + 30
    while run_mlxd("status").returncode != 0:  # answering again
        assert time.monotonic() < deadline
        time.sleep(0.2)

    # One daemon runs at a time: another config file names one that is not running, and
    # start, stop and restart with it leave this one alone, at once.
    other = home.config.parent / "other.toml"
    other.write_text(f"[server]\nport = {home.port + 1}\n", encoding="utf-8")
    for command in (["stop"], ["start", "--timeout", "90"], ["restart", "--timeout", "90"]):
        began = time.monotonic()
        refused = run_mlxd(*command, "--config", str(other))
        assert refused.returncode == 1, (command, refused.stdout, refused.stderr)
        assert f"runs {home.config.resolve()}, not {other}" in refused.stderr
        assert time.monotonic() - began < 45  # it did not wait out the 90 s for the other to answer
        assert supervision.is_alive(pid)
    assert health(home.url) == 200

    stopped = run_mlxd("stop")
    assert stopped.returncode == 0
    assert "stopped" in stopped.stdout
    assert not supervision.is_alive(pid)
    assert not supervision.pid_file(home.state_dir).exists()
    assert run_mlxd("status").returncode == 3
    assert health(home.url) == 0


@pytest.mark.server
def test_start_twice_is_idempotent(stops_daemon: Home) -> None:
    first = run_mlxd("start")
    assert first.returncode == 0, first.stderr
    pid = supervision.read_pid_file(stops_daemon.state_dir)
    second = run_mlxd("start")
    assert second.returncode == 0
    assert "already running" in second.stdout
    assert "warning" not in second.stderr
    assert supervision.read_pid_file(stops_daemon.state_dir) == pid
    demo = run_mlxd("start", "--demo")  # not silently: the running daemon has no demo alias
    assert demo.returncode == 0
    assert "--demo is ignored: mlxd is already running without the demo alias" in demo.stderr


@pytest.mark.server
def test_a_stale_pid_file_does_not_block_start(stops_daemon: Home) -> None:
    home = stops_daemon
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    supervision.write_pid_file(int(gone.stdout), home.state_dir)
    assert run_mlxd("status").returncode == 3
    started = run_mlxd("start")
    assert started.returncode == 0, started.stderr
    pid = supervision.read_pid_file(home.state_dir)
    assert pid is not None
    assert pid != int(gone.stdout)
    assert supervision.is_mlxd_process(pid)


@pytest.mark.server
def test_restart_replaces_the_process(stops_daemon: Home) -> None:
    assert run_mlxd("start", "--demo").returncode == 0
    before = supervision.read_pid_file(stops_daemon.state_dir)
    restarted = run_mlxd("restart")
    assert restarted.returncode == 0, restarted.stderr
    after = supervision.read_pid_file(stops_daemon.state_dir)
    assert after is not None
    assert after != before
    assert health(stops_daemon.url) == 200
    record = supervision.read_run_record(stops_daemon.state_dir)
    assert record is not None
    assert record.pid == after
    assert record.demo is True  # restart keeps how it was started


@pytest.mark.server
def test_a_start_that_fails_exits_1_with_the_log(stops_daemon: Home) -> None:
    # Something that is not mlxd holds the port: the daemon cannot bind and exits.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", stops_daemon.port))
        squatter.listen()
        failed = run_mlxd("start", "--timeout", "60")
    assert failed.returncode == 1
    assert "did not start" in failed.stderr
    assert "exited with code" in failed.stderr
    assert "last log lines" in failed.stderr
    assert "Traceback" not in failed.stderr.split("last log lines")[0]
    assert not supervision.pid_file(stops_daemon.state_dir).exists()


@pytest.mark.server
def test_stop_also_stops_a_foreground_daemon(stops_daemon: Home) -> None:
    home = stops_daemon
    serve = subprocess.Popen(
        [sys.executable, "-m", "mlxd", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while health(home.url) != 200:
            assert serve.poll() is None, "mlxd serve exited"
            assert time.monotonic() < deadline, "mlxd serve did not come up"
            time.sleep(0.1)
        data = json.loads(run_mlxd("status", "--json").stdout)
        assert data["running"] is True
        assert data["service"] == "none"
        assert data["pid"] == serve.pid
        stopped = run_mlxd("stop")
        assert stopped.returncode == 0
        assert "stopped" in stopped.stdout
        assert serve.wait(timeout=30) == 0
    finally:
        serve.kill()
        serve.wait()


def test_a_failed_start_shows_only_what_this_attempt_wrote(home: Home) -> None:
    from mlxd.cli import lifecycle, logfiles

    log = logfiles.daemon_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("port 8080 is in use by pid 1: an earlier run's cause\n", encoding="utf-8")
    offsets = lifecycle._log_offsets()
    assert lifecycle._failure_lines(offsets) == []  # nothing new: no earlier run's lines
    with log.open("a", encoding="utf-8") as file:
        file.write("the MLX runtime failed to load: this attempt\n")
    assert lifecycle._failure_lines(offsets) == ["the MLX runtime failed to load: this attempt"]
    log.write_text("rotated: a new file\n", encoding="utf-8")  # smaller than the offset
    assert lifecycle._failure_lines(offsets) == ["rotated: a new file"]


@pytest.mark.server
def test_ctrl_c_during_start_stops_the_daemon_it_launched(stops_daemon: Home) -> None:
    home = stops_daemon
    # Python's own Ctrl-C handler, even where the tests run with SIGINT ignored (in the
    # background): set in the child itself, as a terminal's process would have it.
    with_ctrl_c = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv = ['mlxd', 'start', '--demo', '--timeout', '120']; runpy.run_module('mlxd', run_name='__main__')"
    )
    starting = subprocess.Popen(
        [sys.executable, "-c", with_ctrl_c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while (pid := supervision.read_pid_file(home.state_dir)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pid is not None
    starting.send_signal(signal.SIGINT)  # before the daemon answers: it loads MLX first
    _, stderr = starting.communicate(timeout=120)
    assert starting.returncode == 130, stderr
    assert "the start was cancelled; the daemon it launched is stopped" in stderr
    assert not supervision.is_alive(pid)
    assert not supervision.pid_file(home.state_dir).exists()
    assert run_mlxd("status").returncode == 3
