"""Find, read and validate ``mlxd.toml`` (minimal version; the full loader replaces it)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mlxd.config.paths import CONFIG_FILENAME, user_config_file
from mlxd.config.schema import MlxdConfig
from mlxd.errors import ConfigError


def discover_config_path(explicit: Path | None = None) -> Path | None:
    """``--config``, then ``$MLXD_CONFIG``, then ``./mlxd.toml``, then the user config dir."""
    if explicit is not None:
        return explicit
    if env := os.environ.get("MLXD_CONFIG"):
        return Path(env)
    for candidate in (Path.cwd() / CONFIG_FILENAME, user_config_file()):
        if candidate.is_file():
            return candidate
    return None


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> MlxdConfig:
    """Read and validate a config file; ``overrides`` (from CLI flags) win over file and env."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path.name}: invalid TOML: {exc}") from None
    data = _merge(data, overrides or {})
    try:
        config = MlxdConfig(**data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"invalid config: {problems[0]}", problems=problems) from None
    base = path.parent.resolve() if path is not None else Path.cwd()
    for model in config.models.values():
        model.bind(base)
    return config
