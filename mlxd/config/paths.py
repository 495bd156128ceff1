"""Where mlxd keeps its files, per platform conventions (platformdirs).

macOS: config and state in ``~/Library/Application Support/mlxd``, logs in
``~/Library/Logs/mlxd``. Elsewhere the XDG directories (``$XDG_CONFIG_HOME/mlxd``,
``$XDG_STATE_HOME/mlxd``, ``$XDG_STATE_HOME/mlxd/log``, ``$XDG_DATA_HOME/mlxd``), and the
cache in ``~/Library/Caches/mlxd`` or ``$XDG_CACHE_HOME/mlxd``.
"""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP = "mlxd"
CONFIG_FILENAME = "mlxd.toml"


def config_dir() -> Path:
    """The user config directory (the second place config discovery looks)."""
    return Path(platformdirs.user_config_dir(APP, appauthor=False))


def state_dir() -> Path:
    """Pid file, crash-loop records and other daemon state."""
    return Path(platformdirs.user_state_dir(APP, appauthor=False))


def log_dir() -> Path:
    """The daemon's own (size-rotated) log files."""
    return Path(platformdirs.user_log_dir(APP, appauthor=False))


def data_dir() -> Path:
    """Generated data such as the demo model."""
    return Path(platformdirs.user_data_dir(APP, appauthor=False))


def cache_dir() -> Path:
    """Files worth keeping but safe to delete, such as prompt prefixes on disk."""
    return Path(platformdirs.user_cache_dir(APP, appauthor=False))


def user_config_file() -> Path:
    """The config file in the user config directory."""
    return config_dir() / CONFIG_FILENAME
