"""The config store: the current config and its generation, swapped atomically on reload.

Every reload path (the file watcher, ``SIGHUP``, ``POST /mlxd/reload``) goes through
``ConfigStore.reload``: read, validate, diff, swap, notify. Any error keeps the old
config serving and is kept in ``last_error`` for ``mlxd status`` until a valid reload.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlxd.config.diff import ConfigDiff, diff_configs
from mlxd.config.loader import describe, load_config
from mlxd.config.schema import MlxdConfig
from mlxd.errors import ConfigError

log = logging.getLogger("mlxd.config")

#: Called as ``callback(old, new, diff)`` after a change is applied, on the reloading thread.
Subscriber = Callable[[MlxdConfig, MlxdConfig, ConfigDiff], None]

#: A file's device, inode, size and modification time (``None``: there is no file).
Fingerprint = tuple[int, int, int, int] | None


def fingerprint(path: Path | None) -> Fingerprint:
    """What tells one version of a file from the next (following a symlink), or None."""
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: ``changed`` is False when the file said nothing new."""

    changed: bool
    generation: int
    diff: ConfigDiff
    config: MlxdConfig


class ConfigStore:
    """Holds the current ``MlxdConfig`` and its generation (1 at start); thread-safe.

    ``overrides`` (command-line flags) are applied again on every reload. The initial
    load raises ``ConfigError`` when the config is invalid: the daemon must not start.
    """

    def __init__(self, path: Path | None, overrides: Mapping[str, Any] | None = None) -> None:
        self._path = path
        self._overrides = dict(overrides or {})
        self._state_lock = threading.Lock()  # guards the (config, generation) pair
        self._reload_lock = threading.Lock()  # one reload at a time, subscribers in order
        # Taken before each read: a write racing the read leaves the file changed, not lost.
        self._read_as = fingerprint(path)
        self._current = load_config(path, self._overrides)
        self._generation = 1
        self._last_error: str | None = None
        self._last_reload_at: datetime | None = None
        self._failures = 0
        self._restart_required: tuple[str, ...] = ()
        self._subscribers: list[Subscriber] = []

    @property
    def path(self) -> Path | None:
        """The config file, or None when running on built-in defaults."""
        return self._path

    @property
    def current(self) -> MlxdConfig:
        """The config in force now."""
        with self._state_lock:
            return self._current

    @property
    def generation(self) -> int:
        """1 for the config the daemon started with, +1 for every applied change."""
        with self._state_lock:
            return self._generation

    def snapshot(self) -> tuple[MlxdConfig, int]:
        """The current config and its generation, read together."""
        with self._state_lock:
            return self._current, self._generation

    @property
    def last_error(self) -> str | None:
        """Why the last reload was rejected, or None once a reload succeeded."""
        with self._state_lock:
            return self._last_error

    @property
    def restart_required(self) -> tuple[str, ...]:
        """Keys the file changed that apply only when mlxd restarts (``server.port``,
        ``distributed``, ...): the daemon keeps serving the old values meanwhile."""
        with self._state_lock:
            return self._restart_required

    @property
    def failures(self) -> int:
        """How many reloads were rejected since start (exported as a metric)."""
        with self._state_lock:
            return self._failures

    @property
    def last_reload_at(self) -> datetime | None:
        """When the last reload was attempted (UTC), or None if there was none yet."""
        with self._state_lock:
            return self._last_reload_at

    def file_changed(self) -> bool:
        """Whether the file is no longer the one the last load read (by any path: the
        watcher, ``SIGHUP``, ``POST /mlxd/reload``), valid or not."""
        return self._path is not None and fingerprint(self._path) != self._read_as

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(old, new, diff)`` after each applied change; returns an unsubscribe."""
        with self._state_lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._state_lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def reload(self) -> ReloadResult:
        """Re-read the file and apply it, or raise ``ConfigError`` and keep the old config.

        Logs the outcome. ``server.host``/``server.port`` and ``[distributed]`` changes are
        not applied (the daemon keeps its socket and its ranks) but listed in
        ``diff.restart_required``.
        """
        with self._reload_lock:
            with self._state_lock:
                self._last_reload_at = datetime.now(UTC)
                old = self._current
            self._read_as = fingerprint(self._path)
            try:
                loaded = load_config(self._path, self._overrides)
            except ConfigError as error:
                message = describe(error)
                with self._state_lock:
                    self._last_error = message
                    self._failures += 1
                log.error("config rejected, still serving generation %d: %s", self.generation, message)
                raise
            pending = diff_configs(old, loaded).restart_required
            new = _keep_address(loaded, old) if pending else loaded
            diff = replace(diff_configs(old, new), restart_required=pending)
            if pending:
                log.warning(
                    "%s changed: restart mlxd to apply (still listening on %s port %d)",
                    " and ".join(pending),
                    old.server.host,
                    old.server.port,
                )
            with self._state_lock:
                self._last_error = None
                self._restart_required = tuple(pending)
                if new == old:
                    # Nothing to apply, but the fresh read replaces the old one, so what is
                    # derived from it per config object (each alias's resolved model path:
                    # a symlink may point elsewhere now) is worked out again.
                    self._current = new
                    return ReloadResult(False, self._generation, diff, new)
                self._current = new
                self._generation += 1
                generation = self._generation
                subscribers = list(self._subscribers)
            log.info("config reloaded, generation %d: %s", generation, diff.summary())
            for callback in subscribers:
                try:
                    callback(old, new, diff)
                except Exception:
                    log.exception("a config subscriber failed on generation %d", generation)
            return ReloadResult(True, generation, diff, new)


def _keep_address(new: MlxdConfig, old: MlxdConfig) -> MlxdConfig:
    """``new`` with ``old``'s host, port and ranks: what the daemon is bound to and runs on."""
    server = new.server.model_copy(update={"host": old.server.host, "port": old.server.port})
    return new.model_copy(update={"server": server, "distributed": old.distributed})
