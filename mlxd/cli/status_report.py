"""What ``mlxd status`` reports: the daemon's own ``/mlxd/status`` plus the manager's view.

The ``--json`` document has exactly the keys of the contract (``distributed`` included,
None for one process). ``config.last_error`` is
why the config in use is not the file as it stands: while the daemon runs, the problem
it reports itself (else the one the CLI found reading the file); when it is not running,
the crash-loop breaker's reason for this config file, else the problem with the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec

from mlxd import supervision
from mlxd.cli.lifecycle import running_manager
from mlxd.cli.managers import LoginService, ServiceManager, ServiceState
from mlxd.cli.managers.base import gone
from mlxd.cli.target import Target
from mlxd.errors import ConfigError, DaemonNotRunningError, MlxdError
from mlxd.protocol.admin import DaemonStatus, ModelStatus

#: Model states that do not hold memory; everything else counts as loaded.
NOT_LOADED_STATES = frozenset({"unloaded", "not_loaded", "available", "downloaded"})


@dataclass(frozen=True)
class StatusReport:
    """The JSON document and the details only the human output shows."""

    data: dict[str, Any]
    manager_detail: str | None = None
    gave_up: str | None = None
    #: Why the supervised daemon last failed to start, while it is down and has not given up
    #: (launchd or systemd relaunch it: the next try may work).
    failed: str | None = None
    #: The daemon's process is alive but did not answer (stopped, hung, or swamped)...
    silent: bool = False
    #: ... or answered that it is stopping (draining its requests).
    stopping: bool = False

    @property
    def running(self) -> bool:
        """Whether the daemon answered."""
        return bool(self.data["running"])

    @property
    def config_error(self) -> str | None:
        """Why the config in use is not the file as it stands, if it is not."""
        error = self.data["config"]["last_error"]
        return str(error) if error else None


def loaded_models(models: list[ModelStatus]) -> list[dict[str, Any]]:
    """The models of ``/mlxd/status`` that are in memory (or on their way), as JSON objects."""
    return [msgspec.to_builtins(m) for m in models if m.state not in NOT_LOADED_STATES]


def _config_problem(error: ConfigError) -> str:
    """One line: the message, and the problems when they add something."""
    extra = [p for p in error.problems if p != error.message]
    return "; ".join([error.message, *extra])


def _manager_state(manager: ServiceManager | None) -> tuple[ServiceState | None, str | None]:
    """The manager's view, or why it could not be had (status must still answer)."""
    if manager is None:
        return None, None
    try:
        return manager.state(), None
    except MlxdError as error:
        return None, error.message


def _ask(target: Target) -> tuple[bool, bool, DaemonStatus | None]:
    """Whether the daemon is up (``/health`` 200), whether it answered at all (a stopping one
    answers 503), and its status when it gives one."""
    client = target.client(timeout=3.0)
    try:
        return True, True, client.status()
    except DaemonNotRunningError:
        return False, False, None
    except MlxdError:  # e.g. a wrong API key: alive, but no details
        try:
            return client.request("GET", "/health").status_code == 200, True, None
        except MlxdError:
            return False, False, None
    finally:
        client.close()


def collect(target: Target) -> StatusReport:
    """Ask the daemon and the service manager; never raises for "not running"."""
    running, answered, info = _ask(target)
    manager = running_manager()
    manager_state, manager_problem = _manager_state(manager)
    file_problem = _config_problem(target.error) if target.error else None
    gave_up = None if running else supervision.gave_up_reason(config=target.config_path)
    if running:
        last_error = (info.config.last_error if info else None) or file_problem
    else:
        last_error = gave_up or file_problem
    pid = info.pid if info else None
    if running and pid is None:
        pid = target.record.pid if target.record else manager_state.pid if manager_state else None
    record = target.record
    alive = not running and record is not None and supervision.is_mlxd_process(record.pid)
    stopping = alive and answered
    if alive and record is not None:
        pid = record.pid
    path = info.config.path if info else None
    data: dict[str, Any] = {
        "running": running,
        "pid": pid,
        "url": target.url,
        "uptime_s": info.uptime_s if info else None,
        "version": info.version if info else None,
        "service": manager.name if manager is not None else "none",
        "config": {
            "path": path or (str(target.config_path) if target.config_path else None),
            "generation": info.config.generation if info else None,
            "last_error": last_error,
            "restart_required": list(info.config.restart_required) if info else [],
        },
        "models": loaded_models(info.models) if info else [],
        # The ranks of a distributed daemon; None for one process (or not running).
        "distributed": msgspec.to_builtins(info.distributed) if info and info.distributed else None,
    }
    detail = manager_problem
    if manager_state is not None:
        detail = manager_state.detail or ("running" if manager_state.running else "stopped")
        if manager_state.pid:
            detail += f", pid {manager_state.pid}"
        if manager_state.last_exit is not None:
            detail += f", last exit code {manager_state.last_exit}"
    if isinstance(manager, LoginService) and (program := manager.missing_program()) is not None:
        detail = f"{detail or 'stopped'}; it runs {gone(program)}: run `mlxd install` again"
    # The service still has the job and will start it again (launchd after its throttle,
    # systemd by Restart=): not after a stop or an uninstall, nor for a detached daemon.
    relaunching = manager_state is not None and manager_state.loaded and not manager_state.running
    failed = _recent_failure(target) if relaunching and not (running or gave_up) else None
    return StatusReport(data, detail, gave_up, failed, alive and not stopping, stopping)


def _recent_failure(target: Target) -> str | None:
    """Why the daemon last failed to start, if that was within the breaker's window (the
    service is still relaunching it; an older failure says nothing about now), and when."""
    now = time.time()
    failure = supervision.last_failure(config=target.config_path, since=now - supervision.BREAKER_WINDOW_S)
    return None if failure is None else f"{failure.reason} ({max(0, round(now - failure.at))}s ago)"
