"""Which daemon a command talks to: its config file, its URL, a client for it.

The running daemon's own run record comes first (``mlxd.supervision.run_record``): it
names the URL the daemon actually bound and the config file it runs, so the daemon is
found even when that file has since become invalid or unreadable. It is used unless
``--config`` / ``$MLXD_CONFIG`` names another file. Without a record the config is, in
order: ``--config`` / ``$MLXD_CONFIG``; the one the installed login service runs; then
the usual discovery, and the URL comes from that file.

Commands that only talk to a running daemon accept an invalid file, because the daemon
keeps serving its last good config and ``mlxd status`` is where the user learns what is
wrong; commands that start one (``strict``) refuse it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mlxd import supervision
from mlxd.cli.client import DaemonClient, daemon_url
from mlxd.config import MlxdConfig, discover_config_path, load_config
from mlxd.errors import ConfigError
from mlxd.supervision import RunRecord


@dataclass(frozen=True)
class Target:
    """A resolved config and where its daemon listens."""

    config_path: Path | None
    config: MlxdConfig
    #: Set when the file is invalid and only its ``[server]`` section (or defaults) was used.
    error: ConfigError | None = None
    #: The running daemon's record, when the command talks to that daemon.
    record: RunRecord | None = None

    @property
    def url(self) -> str:
        """The daemon's base URL: the one it bound, else the one its config names."""
        return self.record.url if self.record is not None else daemon_url(self.config)

    def client(self, timeout: float = 10.0) -> DaemonClient:
        """An HTTP client for the daemon, with the API key when one is set."""
        return DaemonClient(self.url, self.config.server.api_key.get_secret_value(), timeout)


def recorded_config() -> Path | None:
    """The config the installed login service runs with (its plist or unit names it)."""
    from mlxd.cli.managers import installed_login_service

    service = installed_login_service()
    return service.recorded_config() if service is not None else None


def running_daemon(explicit: Path | None) -> RunRecord | None:
    """The running daemon's record, unless ``explicit`` names a config file it does not run."""
    record = supervision.read_run_record()
    if record is None or explicit is None:
        return record
    same = supervision.config_key(explicit) == supervision.config_key(record.config_path)
    return record if same else None


def resolve(explicit: Path | None, *, strict: bool) -> Target:
    """The target for a command; ``strict`` raises on an invalid config file."""
    record = running_daemon(explicit)
    if record is not None:
        path = record.config_path
    else:
        path = explicit or recorded_config() or discover_config_path(None)
    if path is not None:
        path = path.expanduser().resolve()
    try:
        return Target(path, load_config(path), record=record)
    except ConfigError as error:
        if strict:
            raise
        return Target(path, _server_section_only(path, error), error, record)


def _server_section_only(path: Path | None, error: ConfigError) -> MlxdConfig:
    """Enough of a broken config to reach the daemon: its ``[server]`` table, else defaults."""
    server: object = None
    if path is not None:
        try:
            server = _server_table(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            server = None
    attempts = [{"server": server}] if isinstance(server, dict) else []
    for overrides in [*attempts, {}]:
        try:
            return load_config(None, overrides)
        except ConfigError:
            continue
    raise error


_TABLE_HEADER = re.compile(r"\s*\[")
_SERVER_HEADER = re.compile(r"\s*\[\s*server\s*\]\s*(#.*)?$")


def _server_table(text: str) -> object:
    """The file's ``[server]`` table; when the file is not valid TOML, the table's own lines
    read alone, so a typo elsewhere (a half-written alias) still leaves the port and API key
    the running daemon took from it."""
    try:
        return tomllib.loads(text).get("server")
    except tomllib.TOMLDecodeError:
        pass
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _SERVER_HEADER.match(line)), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if _TABLE_HEADER.match(lines[i])), len(lines))
    try:
        return tomllib.loads("\n".join(lines[start:end])).get("server")
    except tomllib.TOMLDecodeError:
        return None
