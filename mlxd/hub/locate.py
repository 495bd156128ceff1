"""Find and check the files of a model before the daemon loads it, naming what is wrong.

``model_directory(spec)`` returns the directory to load for an alias's model (its local
directory, or its cached snapshot) once it is complete, code-free and self-contained,
and otherwise raises the ``ModelLoadError`` subclass that names the cause: not
downloaded (with the exact ``mlxd models pull`` command), a missing directory, corrupt
or incomplete files, or no usable MLX model. These are permanent until someone acts, and
the HTTP layer answers them with statuses clients do not retry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from mlxd.config.schema import MlxdConfig
from mlxd.errors import (
    HubError,
    ModelCorruptError,
    ModelDirNotFoundError,
    ModelLoadError,
    ModelNotDownloadedError,
    ModelUnsupportedError,
)
from mlxd.hub.cache import resolve_cached_model
from mlxd.hub.validate import validate_model_dir

#: HubError codes of ``validate_model_dir`` that mean "not a model mlxd will load".
_UNSUPPORTED = frozenset({"remote_code", "not_mlx_model"})


class ModelFiles(Protocol):
    """What names a model's files (the runtime's ``ModelSpec`` is one)."""

    @property
    def source(self) -> str: ...

    @property
    def revision(self) -> str | None: ...

    @property
    def local_path(self) -> Path | None: ...

    @property
    def adapter_path(self) -> Path | None: ...

    @property
    def label(self) -> str: ...


def model_directory(spec: ModelFiles, config: MlxdConfig | None = None) -> Path:
    """The validated directory to load for ``spec``; ``config`` names the alias to pull.

    Raises:
        ModelNotDownloadedError: a repo not in the cache; the message holds the pull command.
        ModelDirNotFoundError: a local model (or adapter) directory that does not exist.
        ModelCorruptError: missing, truncated or unreadable files.
        ModelUnsupportedError: no MLX model, code in the directory, or links out of it.
    """
    name = spec.label or spec.source
    if spec.local_path is not None:
        path = spec.local_path
        if not path.is_dir():
            raise ModelDirNotFoundError(
                f"model directory {name!r} does not exist",
                hint="put the model there, or fix the alias's `model` in the config",
            )
        confine(path, path, name)
        _check(path, name, local=True)
    else:
        path = _snapshot(spec, name, config)
        # Snapshot files are links into the repo's blobs: they must stay in the repo's folder.
        confine(path, path.parent.parent, name)
        _check(path, name, local=False)
    if spec.adapter_path is not None:
        _check_adapter(spec.adapter_path)
    return path


def pull_command(spec: ModelFiles, config: MlxdConfig | None) -> str:
    """The command that downloads ``spec``'s repo: by alias when one names it, else by repo id."""
    if config is not None:
        for alias, model in config.models.items():
            if not model.is_local and model.model == spec.source and model.revision == spec.revision:
                return f"mlxd models pull {alias}"
    revision = f" --revision {spec.revision}" if spec.revision else ""
    return f"mlxd models pull {spec.source}{revision}"


def confine(directory: Path, root: Path, name: str) -> None:
    """Refuse a directory any of whose entries resolves (through symlinks) outside ``root``."""
    base = root.resolve()
    for entry in directory.iterdir():
        target = entry.resolve()
        if target != base and base not in target.parents:
            raise ModelUnsupportedError(
                f"{name}: {entry.name} points outside its directory; refusing to load it"
            )


def _snapshot(spec: ModelFiles, name: str, config: MlxdConfig | None) -> Path:
    try:
        return resolve_cached_model(spec.source, spec.revision)
    except HubError as exc:
        if exc.code == "model_not_downloaded":
            at = f" at {spec.revision}" if spec.revision else ""
            raise ModelNotDownloadedError(
                f"model {name}{at} is not downloaded: run `{pull_command(spec, config)}`"
            ) from exc
        raise ModelLoadError(exc.message, hint=exc.hint) from exc


def _check(path: Path, name: str, *, local: bool) -> None:
    try:
        validate_model_dir(path, name=name, local=local)
    except HubError as exc:
        kind = ModelUnsupportedError if exc.code in _UNSUPPORTED else ModelCorruptError
        raise kind(exc.message, hint=exc.hint) from exc


def _check_adapter(path: Path) -> None:
    if not path.is_dir():
        raise ModelDirNotFoundError(f"adapter directory {path.name!r} does not exist")
    if not (path / "adapter_config.json").is_file():
        raise ModelCorruptError(f"adapter {path.name}: the directory has no adapter_config.json")
    confine(path, path, "the adapter")
