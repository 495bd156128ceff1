"""The demo model on disk: built once into the data directory, for ``mlxd serve --demo``
and ``./scripts/demo``.

The build goes to a temporary directory and is renamed into place when complete (its
files synced first), so two daemons starting at once, or a build a crash cut short, never
leave a half-written model behind; the name carries ``DEMO_VERSION``, so a new builder
builds afresh.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from mlxd.runtime.demo_model import DEMO_VERSION, build_tiny_model

_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_STALE_BUILD_SECONDS = 3600


def _is_complete(path: Path) -> bool:
    """Whether ``path`` holds every file a model directory needs."""
    return all((path / name).is_file() for name in _MODEL_FILES)


def _fsync_tree(path: Path) -> None:
    """Flush every file and the directory itself, so a rename never publishes lost data."""
    for child in [*path.iterdir(), path]:
        fd = os.open(child, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_builds(data_dir: Path, prefix: str) -> None:
    """Delete temp dirs that crashed builds left behind (old enough not to be running)."""
    cutoff = time.time() - _STALE_BUILD_SECONDS
    for path in data_dir.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)


def ensure_demo_model(data_dir: Path) -> Path:
    """Build the demo model once under ``data_dir/demo-<DEMO_VERSION>``; return its path.

    Builds into a temp dir beside it and renames it into place, so a crash or a
    concurrent build never leaves a half model; a hand-damaged directory is rebuilt.
    """
    data_dir = Path(data_dir)
    final = data_dir / f"demo-{DEMO_VERSION}"
    if _is_complete(final):
        return final
    data_dir.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    _remove_stale_builds(data_dir, prefix)
    if final.exists():
        # Only reachable by hand damage: move it aside first, as removal is not atomic.
        trash = Path(tempfile.mkdtemp(prefix=prefix, dir=data_dir))
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, trash / "damaged")
        shutil.rmtree(trash, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=data_dir))
    try:
        build_tiny_model(tmp)
        _fsync_tree(tmp)
        try:
            # POSIX rename refuses a non-empty target: the first finished build wins.
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
