"""The state directory and the one way supervision files are written there."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else the platform's state directory for mlxd."""
    if explicit is not None:
        return explicit
    from mlxd.config import paths  # deferred: keeps this package cheap to import

    return paths.state_dir()


def write_atomic(path: Path, text: str) -> None:
    """Write via a private temp file and a rename: a reader never sees half a file, and
    nobody but the user can read it (it may name config files and ports)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a file that already existed
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
