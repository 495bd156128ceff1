"""Logging for the daemon: its own size-rotated file (launchd never rotates), text or JSON.

Two guards keep the log trustworthy:

- Every message is one line: control characters (CR, LF, the other C0 and C1 codes,
  U+2028/2029) are escaped by the formatters, so a request path or header that reaches a
  message cannot forge a line (tracebacks, which the daemon writes itself, keep theirs).
- Identical lines are rate-limited: past ``RepeatLimiter.limit`` copies of one line
  within a second, the rest are counted and summed up in one "repeated N more times"
  line, so a flood of the same error cannot rotate the history out of the files.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import json
import logging
import logging.handlers
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlxd.errors import one_line

#: The id of the HTTP request being served, put on every log line written meanwhile.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("mlxd_request_id", default=None)

#: The daemon's own log file name, in the platform log directory.
LOG_FILENAME = "mlxd.log"
#: ``extra={FILE_ONLY: True}`` keeps a record off the console (the CLI prints it itself).
FILE_ONLY = "file_only"
_TEXT = "%(asctime)s %(levelname)-7s %(name)s%(rid)s: %(message)s"


@contextlib.contextmanager
def tagged(request_id: str | None) -> Iterator[None]:
    """Log lines written inside the block carry ``request_id``, on whichever thread runs it
    (the MLX worker sets it while it handles one request's sequences)."""
    token = REQUEST_ID.set(request_id)
    try:
        yield
    finally:
        REQUEST_ID.reset(token)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (empty outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        record.request_id = rid or ""
        record.rid = f" [{rid}]" if rid else ""
        return True


class TextFormatter(logging.Formatter):
    """The text format, with the message escaped to one line."""

    def __init__(self, fmt: str = _TEXT) -> None:
        super().__init__(fmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        record.message = one_line(message)
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": one_line(record.getMessage()),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


@dataclass
class _Seen:
    start: float
    count: int = 1
    suppressed: int = 0
    record: logging.LogRecord | None = None


class RepeatLimiter(logging.Filter):
    """Lets ``limit`` identical lines through per ``window_s``; sums up the rest in one line.

    Lines are identical when logger, level, message and exception type match. The
    summary goes out through ``handler`` when that line (or any line, after the window
    ended) is logged again.
    """

    #: Distinct lines remembered before the expired ones are forgotten.
    MAX_KEYS = 4096

    def __init__(
        self,
        handler: logging.Handler,
        *,
        limit: int = 20,
        window_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.handler = handler
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[object, ...], _Seen] = {}
        #: Keys with suppressed copies, whose summary is still due.
        self._pending: set[tuple[object, ...]] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_summary", False):
            return True
        exc_type = record.exc_info[0] if record.exc_info else None
        key = (record.name, record.levelno, record.getMessage(), exc_type)
        now = self._clock()
        with self._lock:
            due = self._expired(now)
            seen = self._seen.get(key)
            if seen is None or now - seen.start >= self.window_s:
                self._seen[key] = _Seen(now)
                keep = True
            else:
                seen.count += 1
                keep = seen.count <= self.limit
                if not keep:
                    seen.suppressed += 1
                    seen.record = record
                    self._pending.add(key)
        for entry in due:
            self._summarise(entry)
        return keep

    def flush(self) -> None:
        """Sum up what is held back now (at exit: nothing must vanish unsaid)."""
        with self._lock:
            due = [self._seen.pop(key) for key in self._pending]  # the next copy starts anew
            self._pending.clear()
        for seen in due:
            self._summarise(seen)

    def _expired(self, now: float) -> list[_Seen]:
        """Forget lines whose window ended; return those with suppressed copies to sum up."""
        keys = list(self._seen) if len(self._seen) >= self.MAX_KEYS else list(self._pending)
        due = []
        for key in keys:
            seen = self._seen[key]
            if now - seen.start >= self.window_s:
                del self._seen[key]
                self._pending.discard(key)
                if seen.suppressed:
                    due.append(seen)
        if len(self._seen) >= self.MAX_KEYS:  # that many distinct lines within one window
            self._seen = {key: self._seen[key] for key in self._pending}
        return due

    def _summarise(self, seen: _Seen) -> None:
        last = seen.record
        if last is None:
            return
        summary = logging.LogRecord(
            last.name,
            last.levelno,
            last.pathname,
            last.lineno,
            "%s [repeated %d more times within %gs]",
            (last.getMessage(), seen.suppressed, self.window_s),
            None,
        )
        summary.repeat_summary = True
        summary.request_id = getattr(last, "request_id", "")
        summary.rid = getattr(last, "rid", "")
        self.handler.handle(summary)


@atexit.register  # registered after logging's own shutdown, so it runs before it
def _flush_limiters() -> None:
    for handler in logging.getLogger().handlers:
        for limiter in handler.filters:
            if isinstance(limiter, RepeatLimiter):
                limiter.flush()


class _NotOnConsole(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, FILE_ONLY, False)


def setup_logging(level: str, fmt: str, log_dir: Path | None, *, console: bool, tag: str = "") -> Path | None:
    """Log to ``log_dir/mlxd.log`` (10 MB x 5, rotated) and, when ``console``, to stderr.

    ``tag`` starts every text line instead of the time: a follower rank of a distributed
    daemon writes to the launcher, whose log adds the time (and this names the rank)."""
    text = TextFormatter(f"{tag}: %(levelname)s %(name)s%(rid)s: %(message)s") if tag else TextFormatter()
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else text
    handlers: list[logging.Handler] = []
    path = None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / LOG_FILENAME
        handlers.append(
            logging.handlers.RotatingFileHandler(path, maxBytes=10 * 2**20, backupCount=5, encoding="utf-8")
        )
    if console or not handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.addFilter(_NotOnConsole())
        handlers.append(stream)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
        handler.addFilter(RepeatLimiter(handler))
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level.upper())
    return path
