"""The config: schema, loading, discovery and platform paths."""

from mlxd.config.loader import discover_config_path, load_config
from mlxd.config.schema import GenerationDefaults, MlxdConfig, ModelConfig

__all__ = ["GenerationDefaults", "MlxdConfig", "ModelConfig", "discover_config_path", "load_config"]
