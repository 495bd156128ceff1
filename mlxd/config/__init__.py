"""The config: schema, loading, discovery, the reloadable store and platform paths.

The file watcher lives in ``mlxd.config.watcher`` (it imports watchfiles, so it is not
imported here).
"""

from mlxd.config.diff import AliasChange, ConfigDiff
from mlxd.config.generation import GenerationDefaults
from mlxd.config.loader import discover_config, discover_config_path, load_config
from mlxd.config.models import ModelConfig
from mlxd.config.schema import MlxdConfig
from mlxd.config.store import ConfigStore, ReloadResult

__all__ = [
    "AliasChange",
    "ConfigDiff",
    "ConfigStore",
    "GenerationDefaults",
    "MlxdConfig",
    "ModelConfig",
    "ReloadResult",
    "discover_config",
    "discover_config_path",
    "load_config",
]
