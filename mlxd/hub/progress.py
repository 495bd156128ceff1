"""How a pull reports what it does: a rich progress bar on a terminal, plain lines elsewhere.

The puller calls a ``PullReporter``; it never prints. rich is imported only when a bar is
actually drawn.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO


def human_size(num: float) -> str:
    """Bytes as a short decimal size: ``4.2 MB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(num) < 1000 or unit == "TB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1000
    return f"{num:.1f} TB"


class PullReporter(Protocol):
    """Receives a pull's events, in order: ``planned``, then per file ``started``/``advance``/``finished``."""

    def planned(
        self, repo_id: str, commit: str, *, complete: int, partial: int, total_bytes: int, present_bytes: int
    ) -> None:
        """What is already here and how many bytes the pull will transfer (``present_bytes`` of ``total_bytes`` are)."""

    def started(self, path: str, size: int, offset: int) -> None:
        """A file starts downloading at ``offset`` (> 0 when a partial file is resumed)."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` arrived (negative when the server ignored a resume and the file restarts)."""

    def finished(self, path: str) -> None:
        """A file is complete and verified."""

    def close(self) -> None:
        """The pull ended (successfully or not): release the terminal."""


class NullReporter:
    """Reports nothing (library use)."""

    def planned(
        self, repo_id: str, commit: str, *, complete: int, partial: int, total_bytes: int, present_bytes: int
    ) -> None:
        """Ignore."""

    def started(self, path: str, size: int, offset: int) -> None:
        """Ignore."""

    def advance(self, nbytes: int) -> None:
        """Ignore."""

    def finished(self, path: str) -> None:
        """Ignore."""

    def close(self) -> None:
        """Ignore."""


class PlainReporter:
    """One line per event, plus a progress line at most every ``interval`` seconds: for logs and pipes."""

    def __init__(self, stream: TextIO | None = None, interval: float = 10.0) -> None:
        self._out = stream or sys.stdout
        self._interval = interval
        self._path = ""
        self._size = 0
        self._done = 0
        self._last = 0.0

    def _say(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    def planned(
        self, repo_id: str, commit: str, *, complete: int, partial: int, total_bytes: int, present_bytes: int
    ) -> None:
        """Announce the commit and the amount to transfer."""
        self._say(
            f"pulling {repo_id} at commit {commit[:12]}: {human_size(total_bytes - present_bytes)} to download"
        )

    def started(self, path: str, size: int, offset: int) -> None:
        """Name the file and where it resumes."""
        self._path, self._size, self._done, self._last = path, size, offset, time.monotonic()
        resumed = f", resuming at {human_size(offset)}" if offset else ""
        self._say(f"  {path} ({human_size(size)}{resumed})")

    def advance(self, nbytes: int) -> None:
        """Print progress now and then, never per chunk."""
        self._done += nbytes
        now = time.monotonic()
        if now - self._last >= self._interval and self._size:
            self._last = now
            self._say(f"  {self._path}: {100 * self._done // self._size}% of {human_size(self._size)}")

    def finished(self, path: str) -> None:
        """Confirm the file."""
        self._say(f"  {path}: done")

    def close(self) -> None:
        """Nothing to release."""


class RichReporter:
    """One rich bar over all bytes of the pull, with the current file, rate and ETA."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task: Any = None

    def planned(
        self, repo_id: str, commit: str, *, complete: int, partial: int, total_bytes: int, present_bytes: int
    ) -> None:
        """Start the bar at the bytes already present."""
        self._progress.console.print(f"pulling [bold]{repo_id}[/] at commit {commit[:12]}")
        self._progress.start()
        self._task = self._progress.add_task(repo_id, total=total_bytes, completed=present_bytes)

    def started(self, path: str, size: int, offset: int) -> None:
        """Show the file being fetched."""
        if self._task is not None:
            self._progress.update(self._task, description=path)

    def advance(self, nbytes: int) -> None:
        """Move the bar."""
        if self._task is not None:
            self._progress.advance(self._task, nbytes)

    def finished(self, path: str) -> None:
        """Nothing per file: the bar shows the total."""

    def close(self) -> None:
        """Stop redrawing so later output lands below the bar."""
        self._progress.stop()


def reporter_for(stream: TextIO | None = None) -> PullReporter:
    """A rich bar when ``stream`` (stdout by default) is a terminal, else plain lines."""
    out = stream or sys.stdout
    return RichReporter() if out.isatty() else PlainReporter(out)
