"""The daemon's log files: where they are, their last lines, following them.

``mlxd.log`` is the daemon's own log, which it rotates by size. ``mlxd.out.log`` catches
what the process prints on stdout/stderr (a traceback, a one-line startup error) when it
runs detached or under launchd; it holds only the current run for a detached daemon.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

DAEMON_LOG = "mlxd.log"
CONSOLE_LOG = "mlxd.out.log"
_BLOCK = 64 * 1024


def log_dir() -> Path:
    """The platform's log directory for mlxd."""
    from mlxd.config import paths

    return paths.log_dir()


def daemon_log() -> Path:
    """The daemon's own log file."""
    return log_dir() / DAEMON_LOG


def console_log() -> Path:
    """The captured stdout/stderr of a detached or launchd-run daemon."""
    return log_dir() / CONSOLE_LOG


def size(path: Path) -> int:
    """The file's size, 0 when it does not exist (an offset to read new lines from)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tail(path: Path, n: int, *, since: int = 0) -> list[str]:
    """The last ``n`` lines of ``path`` written after byte offset ``since``."""
    if n <= 0:
        return []
    try:
        with path.open("rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            if end < since:  # rotated or truncated since: everything in it is new
                since = 0
            start = end
            data = b""
            # Read backwards block by block until there are enough lines.
            while start > since and data.count(b"\n") <= n:
                start = max(since, start - _BLOCK)
                handle.seek(start)
                data = handle.read(end - start)
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-n:]


def follow(
    path: Path,
    emit: Callable[[str], None],
    *,
    interval_s: float = 0.25,
    keep_going: Callable[[], bool] = lambda: True,
) -> None:
    """Emit lines appended to ``path`` until ``keep_going`` says stop (or Ctrl-C).

    The daemon rotates its log by renaming it, so a changed inode or a shrunk file means
    a new file: read it from the start.
    """
    position = size(path)
    inode = _inode(path)
    pending = b""
    while keep_going():
        current = _inode(path)
        if current != inode or size(path) < position:
            inode, position, pending = current, 0, b""
        try:
            with path.open("rb") as handle:
                handle.seek(position)
                chunk = handle.read()
        except OSError:
            chunk = b""
        if chunk:
            position += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                emit(line.decode(errors="replace"))
        else:
            time.sleep(interval_s)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None
