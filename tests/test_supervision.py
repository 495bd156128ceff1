"""The pid file and the crash-loop breaker, on real files and real processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlxd import supervision


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not mlxd (e.g. what a reused pid would point at)."""
    code = "import time; print('ready', flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"  # exec'd: its command line is final
    yield process
    process.kill()
    process.wait()


def test_pid_file_round_trip(tmp_path: Path) -> None:
    assert supervision.read_pid_file(tmp_path) is None
    path = supervision.write_pid_file(1234, tmp_path)
    assert path == tmp_path / "mlxd.pid"
    assert path.read_text() == "1234\n"
    assert supervision.read_pid_file(tmp_path) == 1234
    supervision.remove_pid_file(tmp_path, only_pid=999)  # someone else's: kept
    assert supervision.read_pid_file(tmp_path) == 1234
    supervision.remove_pid_file(tmp_path, only_pid=1234)
    assert not path.exists()


def test_garbage_pid_file_is_stale(tmp_path: Path) -> None:
    (tmp_path / "mlxd.pid").write_text("not a pid\n")
    assert supervision.live_daemon_pid(tmp_path) is None
    assert not (tmp_path / "mlxd.pid").exists()


def test_pid_of_a_process_that_is_gone_is_stale(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    supervision.write_pid_file(int(done.stdout), tmp_path)
    assert supervision.live_daemon_pid(tmp_path) is None
    assert not supervision.pid_file(tmp_path).exists()


def test_pid_reused_by_another_program_is_stale(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    supervision.write_pid_file(sleeper.pid, tmp_path)
    assert supervision.is_alive(sleeper.pid)
    assert supervision.live_daemon_pid(tmp_path) is None
    assert not supervision.pid_file(tmp_path).exists()


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Not reaped yet: the process table still lists it, as a zombie.
    for _ in range(100):
        if not supervision.is_alive(child.pid):
            break
        time.sleep(0.05)
    assert not supervision.is_alive(child.pid)
    child.wait()


def test_process_command_and_mlxd_detection(sleeper: subprocess.Popen[bytes]) -> None:
    command = supervision.process_command(sleeper.pid)
    assert command is not None
    assert "time.sleep(60)" in command
    assert not supervision.looks_like_mlxd(command)
    assert supervision.looks_like_mlxd("/venv/bin/python -m mlxd serve --config /a/mlxd.toml")
    assert supervision.looks_like_mlxd("/venv/bin/python /venv/bin/mlxd serve")
    assert not supervision.looks_like_mlxd("/venv/bin/python -m mlxd status")
    assert not supervision.looks_like_mlxd(None)


def test_breaker_counts_failures_within_the_window(tmp_path: Path) -> None:
    assert supervision.read_breaker(tmp_path) is None
    assert not supervision.should_give_up(state_dir=tmp_path)
    for i in range(4):
        count = supervision.record_start_failure(f"boom {i}", state_dir=tmp_path, now=1000.0 + i)
    assert count == 4
    assert not supervision.should_give_up(state_dir=tmp_path, now=1004.0)
    supervision.record_start_failure("boom 4", state_dir=tmp_path, now=1004.0)
    assert supervision.should_give_up(state_dir=tmp_path, now=1004.0)
    # Two minutes later the old failures no longer count.
    assert not supervision.should_give_up(state_dir=tmp_path, now=1004.0 + 121)
    assert supervision.record_start_failure("late", state_dir=tmp_path, now=1200.0) == 1


def test_breaker_gave_up_and_clear(tmp_path: Path) -> None:
    assert supervision.gave_up_reason(tmp_path) is None
    supervision.record_start_failure("invalid config: server.port", state_dir=tmp_path)
    supervision.record_gave_up("invalid config: server.port", state_dir=tmp_path)
    record = supervision.read_breaker(tmp_path)
    assert record is not None
    assert record["gave_up"]["reason"] == "invalid config: server.port"
    assert supervision.gave_up_reason(tmp_path) == "invalid config: server.port"
    assert record["failures"]
    assert supervision.breaker_file(tmp_path).stat().st_mode & 0o777 == 0o600
    supervision.clear_breaker(tmp_path)
    supervision.clear_breaker(tmp_path)  # twice is fine
    assert supervision.read_breaker(tmp_path) is None
    assert not supervision.breaker_file(tmp_path).exists()


def test_last_failure_is_the_latest_reason_of_that_config(tmp_path: Path) -> None:
    mine, other = tmp_path / "mine.toml", tmp_path / "other.toml"
    assert supervision.last_failure(tmp_path, config=mine) is None
    supervision.record_start_failure("port 8080 is in use", state_dir=tmp_path, config=mine, now=100.0)
    supervision.record_start_failure("model not found", state_dir=tmp_path, config=mine, now=101.0)
    assert supervision.last_failure(tmp_path, config=mine) == supervision.Failure("model not found", 101.0)
    assert supervision.last_failure(tmp_path, config=other) is None
    assert supervision.last_failure(tmp_path, config=mine, since=100.5) == supervision.Failure(
        "model not found", 101.0
    )
    assert supervision.last_failure(tmp_path, config=mine, since=101.5) is None  # recorded before
    supervision.record_gave_up("model not found", state_dir=tmp_path, config=mine, now=101.0)
    assert supervision.gave_up_reason(tmp_path, config=mine, since=100.0) == "model not found"
    assert supervision.gave_up_reason(tmp_path, config=mine, since=101.5) is None
    supervision.clear_breaker(tmp_path, config=mine)
    assert supervision.last_failure(tmp_path, config=mine) is None


def test_breaker_records_are_kept_per_config_file(tmp_path: Path) -> None:
    mine, other = tmp_path / "a" / "mlxd.toml", tmp_path / "b" / "mlxd.toml"
    for _ in range(5):
        supervision.record_start_failure("port in use", config=other, state_dir=tmp_path)
    supervision.record_gave_up("port in use", config=other, state_dir=tmp_path)
    assert supervision.should_give_up(config=other, state_dir=tmp_path)
    assert not supervision.should_give_up(config=mine, state_dir=tmp_path)
    assert supervision.gave_up_reason(tmp_path, config=mine) is None
    assert supervision.gave_up_reason(tmp_path, config=None) is None  # built-in defaults are a key too
    # The same file named another way is the same record.
    relative = Path(tmp_path / "b" / ".." / "b" / "mlxd.toml")
    assert supervision.gave_up_reason(tmp_path, config=relative) == "port in use"
    supervision.record_start_failure("other", config=mine, state_dir=tmp_path)
    supervision.clear_breaker(tmp_path, config=other)
    assert supervision.gave_up_reason(tmp_path, config=other) is None
    assert supervision.read_breaker(tmp_path, config=mine) is not None


def test_corrupt_breaker_file_reads_as_none(tmp_path: Path) -> None:
    supervision.breaker_file(tmp_path).write_text("{not json")
    assert supervision.read_breaker(tmp_path) is None
    assert supervision.record_start_failure("x", state_dir=tmp_path) == 1


def test_default_state_dir_comes_from_platform_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    from mlxd.config import paths

    supervision.record_gave_up("why")
    assert supervision.breaker_file() == paths.state_dir() / "breaker.json"
    assert supervision.gave_up_reason() == "why"


# --- the run record ---------------------------------------------------------------------


@pytest.fixture
def lookalike() -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose command line reads ``mlxd serve``."""
    code = "import time; print('ready', flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", code, "mlxd", "serve"], stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    yield process
    process.kill()
    process.wait()


def _as_pid(state_dir: Path, pid: int) -> None:
    """Make the record name ``pid`` (write_run_record always records the calling process)."""
    path = supervision.run_record_file(state_dir)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "pid": pid}))


def test_run_record_round_trip_is_private(tmp_path: Path, lookalike: subprocess.Popen[bytes]) -> None:
    config = tmp_path / "conf" / "mlxd.toml"
    written = supervision.write_run_record("0.0.0.0", 9123, config, state_dir=tmp_path)
    path = supervision.run_record_file(tmp_path)
    assert path == tmp_path / "run.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert written.url == "http://127.0.0.1:9123"  # bound to every address: connect through loopback
    assert written.config == str(config.resolve())
    _as_pid(tmp_path, lookalike.pid)
    record = supervision.read_run_record(tmp_path)
    assert record is not None
    assert record.pid == lookalike.pid
    assert record.url == "http://127.0.0.1:9123"
    assert record.config_path == config.resolve()
    assert record.version
    assert record.supervised is False
    # Only the daemon that wrote it removes it.
    supervision.remove_run_record(tmp_path, only_pid=lookalike.pid + 1)
    assert path.exists()
    supervision.remove_run_record(tmp_path, only_pid=lookalike.pid)
    assert not path.exists()


def test_run_record_of_a_dead_process_is_stale(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    supervision.write_run_record("127.0.0.1", 8080, None, state_dir=tmp_path)
    _as_pid(tmp_path, int(gone.stdout))
    assert supervision.read_run_record(tmp_path) is None
    assert not supervision.run_record_file(tmp_path).exists()


def test_run_record_of_a_reused_pid_is_stale(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    supervision.write_run_record("127.0.0.1", 8080, None, state_dir=tmp_path)
    _as_pid(tmp_path, sleeper.pid)
    assert supervision.read_run_record(tmp_path) is None
    assert not supervision.run_record_file(tmp_path).exists()


@pytest.mark.parametrize("text", ["{not json", "[]", '{"pid": "12", "url": "x"}', '{"url": "x"}'])
def test_a_garbled_run_record_is_removed(tmp_path: Path, text: str) -> None:
    supervision.run_record_file(tmp_path).write_text(text)
    assert supervision.read_run_record(tmp_path) is None
    assert not supervision.run_record_file(tmp_path).exists()


def test_connect_url() -> None:
    assert supervision.connect_url("::", 80) == "http://127.0.0.1:80"
    assert supervision.connect_url("::1", 80) == "http://[::1]:80"
    assert supervision.connect_url("localhost", 8080) == "http://localhost:8080"


def test_listening_pid_names_the_listener() -> None:
    import os
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert supervision.listening_pid(port) == os.getpid()
    assert supervision.listening_pid(port) is None
