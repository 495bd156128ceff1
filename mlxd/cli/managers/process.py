"""The detached-process backend: works anywhere, and is the fallback without a login service.

``mlxd start`` spawns ``python -m mlxd serve`` in a new session (so closing the terminal
does not signal it), with its stdout/stderr in the log directory and its pid in the
state directory. Nothing restarts it after a crash; that is what ``mlxd install`` is for.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from mlxd import supervision
from mlxd.cli.logfiles import CONSOLE_LOG
from mlxd.cli.managers.base import KILL_WAIT_S, ServiceManager, ServiceSpec, ServiceState, poll_until
from mlxd.errors import ServiceManagerError


def terminate(pid: int, timeout_s: float, interval_s: float = 0.1) -> bool:
    """SIGTERM ``pid`` and wait for it to exit; SIGKILL it after ``timeout_s``.

    Returns False when it had to be killed. The daemon drains in-flight requests on
    SIGTERM within its drain timeout, which ``timeout_s`` should exceed.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    except PermissionError as exc:
        raise ServiceManagerError(f"not allowed to stop process {pid}: {exc.strerror}") from None
    if poll_until(lambda: not supervision.is_alive(pid), timeout_s, interval_s):
        return True
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    poll_until(lambda: not supervision.is_alive(pid), KILL_WAIT_S, interval_s)
    return False


class ProcessManager(ServiceManager):
    """A detached ``mlxd serve`` tracked by a pid file."""

    name = "process"
    poll_interval_s = 0.1

    def __init__(self, *, state_dir: Path | None = None, log_dir: Path | None = None) -> None:
        self._state_dir = state_dir
        self._log_dir = log_dir

    @property
    def state_dir(self) -> Path:
        """Where the pid file and run record live."""
        if self._state_dir is None:
            from mlxd.config import paths

            self._state_dir = paths.state_dir()
        return self._state_dir

    @property
    def log_dir(self) -> Path:
        """Where the console log goes."""
        if self._log_dir is None:
            from mlxd.config import paths

            self._log_dir = paths.log_dir()
        return self._log_dir

    def live_pid(self) -> int | None:
        """The detached daemon's pid while it runs (a stale pid file is removed)."""
        return supervision.live_daemon_pid(self.state_dir)

    def start(self, spec: ServiceSpec) -> None:
        """Spawn the daemon (see ``spawn``)."""
        self.spawn(spec)

    def spawn(self, spec: ServiceSpec) -> subprocess.Popen[bytes]:
        """Spawn ``mlxd serve`` detached; the handle lets the caller notice an early exit."""
        for directory in (self.state_dir, self.log_dir, spec.working_dir):
            directory.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Nothing relaunches a detached daemon, so it must fail loudly (exit 78), not
        # record-and-exit-0 as it does under launchd/systemd.
        env.pop("MLXD_SUPERVISED", None)
        # Truncated per start: it holds what this run printed, and cannot grow forever.
        with (self.log_dir / CONSOLE_LOG).open("wb") as console:
            process = subprocess.Popen(
                spec.argv(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                cwd=spec.working_dir,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        supervision.write_pid_file(process.pid, self.state_dir)
        return process

    def stop(self, timeout_s: float) -> bool:
        """SIGTERM the recorded daemon and wait; False when none was running."""
        pid = self.live_pid()
        if pid is None:
            return False
        terminate(pid, timeout_s, self.poll_interval_s)
        supervision.remove_pid_file(self.state_dir, only_pid=pid)
        return True

    def restart(self, spec: ServiceSpec, timeout_s: float) -> None:
        """Stop, then spawn again."""
        self.stop(timeout_s)
        self.spawn(spec)

    def state(self) -> ServiceState:
        """Running when the pid file names a live ``mlxd serve``."""
        pid = self.live_pid()
        return ServiceState(loaded=pid is not None, running=pid is not None, pid=pid)

    def recorded_config(self) -> Path | None:
        """The config the running detached daemon runs, from its own run record."""
        pid = self.live_pid()
        record = supervision.read_run_record(self.state_dir)
        return record.config_path if record is not None and record.pid == pid else None
