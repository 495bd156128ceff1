"""Which daemon a command talks to: its config file, its URL, a client for it.

The config is, in order: ``--config`` / ``$MLXD_CONFIG``; the one the installed login
service or the running detached daemon was started with (so ``mlxd status`` run from
another directory still finds it); then the usual discovery. Commands that only talk
to a running daemon accept an invalid file, because the daemon keeps serving its last
good config and ``mlxd status`` is where the user learns what is wrong.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from mlxd.cli.client import DaemonClient, daemon_url
from mlxd.config import MlxdConfig, discover_config_path, load_config
from mlxd.errors import ConfigError


@dataclass(frozen=True)
class Target:
    """A resolved config and where its daemon listens."""

    config_path: Path | None
    config: MlxdConfig
    #: Set when the file is invalid and only its ``[server]`` section (or defaults) was used.
    error: ConfigError | None = None

    @property
    def url(self) -> str:
        """The daemon's base URL."""
        return daemon_url(self.config)

    def client(self, timeout: float = 10.0) -> DaemonClient:
        """An HTTP client for the daemon, with the API key when one is set."""
        return DaemonClient.for_config(self.config, timeout=timeout)


def recorded_config() -> Path | None:
    """The config the installed login service, or the running detached daemon, uses."""
    from mlxd.cli.managers import installed_login_service
    from mlxd.cli.managers.process import ProcessManager

    service = installed_login_service()
    if service is not None and (path := service.recorded_config()) is not None:
        return path
    return ProcessManager().recorded_config()


def resolve(explicit: Path | None, *, strict: bool) -> Target:
    """The target for a command; ``strict`` raises on an invalid config file."""
    path = explicit or recorded_config() or discover_config_path(None)
    if path is not None:
        path = path.expanduser().resolve()
    try:
        return Target(path, load_config(path))
    except ConfigError as error:
        if strict:
            raise
        return Target(path, _server_section_only(path, error), error)


def _server_section_only(path: Path | None, error: ConfigError) -> MlxdConfig:
    """Enough of a broken config to reach the daemon: its ``[server]`` table, else defaults."""
    server: object = None
    if path is not None:
        try:
            server = tomllib.loads(path.read_text(encoding="utf-8")).get("server")
        except (OSError, tomllib.TOMLDecodeError):
            server = None
    attempts = [{"server": server}] if isinstance(server, dict) else []
    for overrides in [*attempts, {}]:
        try:
            return load_config(None, overrides)
        except ConfigError:
            continue
    raise error
