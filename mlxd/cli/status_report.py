"""What ``mlxd status`` reports: the daemon's own ``/mlxd/status`` plus the manager's view.

The ``--json`` document has exactly the keys of the contract. When the daemon is not
running, ``config.last_error`` carries why, if known: the crash-loop breaker's reason,
else the problem with the config file the CLI found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxd import supervision
from mlxd.cli.lifecycle import running_manager
from mlxd.cli.managers import ServiceManager, ServiceState
from mlxd.cli.target import Target
from mlxd.errors import ConfigError, DaemonNotRunningError, MlxdError

#: Model states that do not hold memory; everything else counts as loaded.
NOT_LOADED_STATES = frozenset({"unloaded", "not_loaded", "available", "downloaded"})


@dataclass(frozen=True)
class StatusReport:
    """The JSON document and the details only the human output shows."""

    data: dict[str, Any]
    manager_detail: str | None = None
    gave_up: str | None = None

    @property
    def running(self) -> bool:
        """Whether the daemon answered."""
        return bool(self.data["running"])


def loaded_models(models: object) -> list[dict[str, Any]]:
    """The entries of ``/mlxd/status`` ``models`` that are in memory (or on their way)."""
    if not isinstance(models, list):
        return []
    return [m for m in models if isinstance(m, dict) and m.get("state") not in NOT_LOADED_STATES]


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


def collect(target: Target) -> StatusReport:
    """Ask the daemon and the service manager; never raises for "not running"."""
    client = target.client(timeout=3.0)
    info: dict[str, Any] = {}
    try:
        info = client.status()
        running = True
    except DaemonNotRunningError:
        running = False
    except MlxdError:
        running = client.is_healthy()  # e.g. a wrong API key: alive, but no details
    finally:
        client.close()

    manager = running_manager()
    manager_state, manager_problem = _manager_state(manager)
    gave_up = None if running else supervision.gave_up_reason()
    raw_config = info.get("config")
    server_config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
    last_error = server_config.get("last_error") if running else None
    if not running:
        last_error = gave_up or (_config_problem(target.error) if target.error else None)
    pid = info.get("pid") if running else None
    if running and pid is None and manager_state is not None:
        pid = manager_state.pid
    data: dict[str, Any] = {
        "running": running,
        "pid": pid,
        "url": target.url,
        "uptime_s": info.get("uptime_s"),
        "version": info.get("version"),
        "service": manager.name if manager is not None else "none",
        "config": {
            "path": server_config.get("path") or (str(target.config_path) if target.config_path else None),
            "generation": server_config.get("generation"),
            "last_error": last_error,
        },
        "models": loaded_models(info.get("models")),
    }
    detail = manager_problem
    if manager_state is not None:
        detail = manager_state.detail or ("running" if manager_state.running else "stopped")
        if manager_state.pid:
            detail += f", pid {manager_state.pid}"
        if manager_state.last_exit is not None:
            detail += f", last exit code {manager_state.last_exit}"
    return StatusReport(data, detail, gave_up)
