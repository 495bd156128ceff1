"""Where an alias's weights are on disk: confined to their directory and validated before a load.

The runtime gets these as its ``resolve_path``: it never opens a path a request named,
only the directories and cached snapshots the config points at, and refuses any whose
entries lead (through symlinks) outside them.
"""

from __future__ import annotations

from pathlib import Path

from mlxd.errors import HubError, ModelLoadError
from mlxd.runtime.engine import ModelSpec


def resolve_model_path(spec: ModelSpec) -> Path:
    """A local model directory, or the cached snapshot of a repo; validated before loading."""
    from mlxd.hub import resolve_cached_model, validate_model_dir

    name = spec.label or spec.source
    try:
        if spec.local_path is not None:
            path = spec.local_path
            if not path.is_dir():
                raise ModelLoadError(f"model directory {name!r} does not exist")
            confine(path, path, name)
        else:
            path = resolve_cached_model(spec.source, spec.revision)
            # Snapshot files are links into the repo's blobs: they must stay in the repo's folder.
            confine(path, path.parent.parent, name)
        validate_model_dir(path, name=name)
    except HubError as exc:
        raise ModelLoadError(exc.message, hint=exc.hint) from exc
    if spec.adapter_path is not None:
        if not (spec.adapter_path / "adapter_config.json").is_file():
            raise ModelLoadError("the adapter directory has no adapter_config.json")
        confine(spec.adapter_path, spec.adapter_path, "the adapter")
    return path


def confine(directory: Path, root: Path, name: str) -> None:
    """Refuse a directory any of whose entries resolves (through symlinks) outside ``root``."""
    base = root.resolve()
    for entry in directory.iterdir():
        target = entry.resolve()
        if target != base and base not in target.parents:
            raise ModelLoadError(f"{name}: {entry.name} points outside its directory; refusing to load it")
