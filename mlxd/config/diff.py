"""What changed between two configs, in the terms the daemon acts on.

Aliases whose ``model``, ``revision``, ``adapter`` or ``parallel`` changed need their
weights swapped; every other change is cheap and applies at once. ``server.host`` and
``server.port`` need a restart: the listening socket cannot move under running requests;
so does ``[distributed]``: the ranks are started once, with the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlxd.config.models import ModelConfig
from mlxd.config.schema import MlxdConfig

#: Fields whose change means loading other weights (the rest are cheap).
WEIGHT_FIELDS = ("model", "revision", "adapter", "parallel")
#: Fields that only take effect when the daemon binds its socket again.
RESTART_FIELDS = ("host", "port")


@dataclass(frozen=True)
class AliasChange:
    """One alias present in both configs whose settings differ; ``fields`` names them."""

    alias: str
    fields: tuple[str, ...]

    @property
    def weights_changed(self) -> bool:
        """True when the alias now points at other weights (model, revision or adapter)."""
        return any(name in WEIGHT_FIELDS for name in self.fields)


@dataclass(frozen=True)
class ConfigDiff:
    """The difference between an old and a new config."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[AliasChange] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)

    @property
    def weights_changed(self) -> list[str]:
        """Changed aliases that need other weights loaded."""
        return [change.alias for change in self.changed if change.weights_changed]

    @property
    def cheap_changed(self) -> list[str]:
        """Changed aliases whose weights stay the same (defaults, limits, keep_alive, …)."""
        return [change.alias for change in self.changed if not change.weights_changed]

    @property
    def is_empty(self) -> bool:
        """True when nothing at all differs."""
        return not (self.sections or self.restart_required)

    def summary(self) -> str:
        """A short human description for the log (key names only, never values)."""
        parts = []
        if self.added:
            parts.append("added " + ", ".join(self.added))
        if self.removed:
            parts.append("removed " + ", ".join(self.removed))
        if self.weights_changed:
            parts.append("new weights for " + ", ".join(self.weights_changed))
        other = [key for key in self.keys if not key.startswith("models.")]
        if self.cheap_changed:
            other += [f"models.{alias}" for alias in self.cheap_changed]
        if other:
            parts.append("changed " + ", ".join(other))
        return "; ".join(parts) or "no changes"


def diff_configs(old: MlxdConfig, new: MlxdConfig) -> ConfigDiff:
    """Compare two configs section by section and alias by alias."""
    added = [alias for alias in new.models if alias not in old.models]
    removed = [alias for alias in old.models if alias not in new.models]
    changed = [
        AliasChange(alias, _changed_fields(old.models[alias], new.models[alias]))
        for alias in new.models
        if alias in old.models and old.models[alias] != new.models[alias]
    ]
    sections = [name for name in type(new).model_fields if getattr(old, name) != getattr(new, name)]
    restart = [
        f"server.{name}" for name in RESTART_FIELDS if getattr(old.server, name) != getattr(new.server, name)
    ]
    if old.distributed != new.distributed:
        restart.append("distributed")
    keys = _changed_keys(old.model_dump(), new.model_dump())
    return ConfigDiff(added, removed, changed, sections, keys, restart)


def _changed_fields(old: ModelConfig, new: ModelConfig) -> tuple[str, ...]:
    names = tuple(name for name in type(new).model_fields if getattr(old, name) != getattr(new, name))
    # Equal fields but different base directories: relative paths now point elsewhere.
    return names or WEIGHT_FIELDS


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for name in dict.fromkeys([*old, *new]):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        path = f"{prefix}{name}"
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            keys += _changed_keys(before, after, path + ".")
        else:
            keys.append(path)
    return keys
