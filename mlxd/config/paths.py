"""Where mlxd keeps its files, per platform conventions.

macOS: config, state and data in ``~/Library/Application Support/mlxd``, logs in
``~/Library/Logs/mlxd``, the cache in ``~/Library/Caches/mlxd``, whatever ``XDG_*``
variables say: a LaunchAgent starts the daemon without the shell's environment, so a
CLI that followed a dotfile's ``XDG_STATE_HOME`` would look for the daemon's run record
and crash-loop breaker where the daemon never writes them (platformdirs honours those
variables on macOS too). Elsewhere the XDG directories, through platformdirs:
``$XDG_CONFIG_HOME/mlxd``, ``$XDG_STATE_HOME/mlxd``, ``$XDG_STATE_HOME/mlxd/log``,
``$XDG_DATA_HOME/mlxd``, ``$XDG_CACHE_HOME/mlxd``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs

APP = "mlxd"
CONFIG_FILENAME = "mlxd.toml"


def _library(*parts: str) -> Path:
    """``~/Library/<parts>/mlxd`` (macOS)."""
    return Path.home().joinpath("Library", *parts, APP)


def _on_mac() -> bool:
    return sys.platform == "darwin"


def config_dir() -> Path:
    """The user config directory (the second place config discovery looks)."""
    if _on_mac():
        return _library("Application Support")
    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def state_dir() -> Path:
    """Pid file, crash-loop records and other daemon state."""
    if _on_mac():
        return _library("Application Support")
    return Path(platformdirs.user_state_dir(APP, appauthor=False))


def log_dir() -> Path:
    """The daemon's own (size-rotated) log files."""
    if _on_mac():
        return _library("Logs")
    return Path(platformdirs.user_log_dir(APP, appauthor=False))


def data_dir() -> Path:
    """Generated data such as the demo model."""
    if _on_mac():
        return _library("Application Support")
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def cache_dir() -> Path:
    """Files worth keeping but safe to delete, such as prompt prefixes on disk."""
    if _on_mac():
        return _library("Caches")
    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def user_config_file() -> Path:
    """The config file in the user config directory."""
    return config_dir() / CONFIG_FILENAME
