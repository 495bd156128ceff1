"""The detached-process backend: pid file, stale pids, graceful stop, and the real daemon.

The first tests use a plain Python process whose command line reads ``mlxd serve``, to
pin down the pid logic on its own; the ``server`` tests run the real ``mlxd start`` /
``status`` / ``stop`` as subprocesses against a real daemon.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlxd import supervision
from mlxd.cli.managers.process import ProcessManager, terminate
from tests.cli.conftest import Home

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


def test_run_record_belongs_to_the_live_daemon(home: Home, lookalike: subprocess.Popen[bytes]) -> None:
    manager = ProcessManager()
    record = manager.state_dir / "process.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f'{{"pid": {lookalike.pid}, "config": "{home.config}", "demo": true}}')
    assert manager.recorded_config() is None  # no pid file: not the running daemon's record
    supervision.write_pid_file(lookalike.pid, manager.state_dir)
    assert manager.recorded_config() == Path(str(home.config))
    assert manager.run_record() == {"pid": lookalike.pid, "config": str(home.config), "demo": True}
