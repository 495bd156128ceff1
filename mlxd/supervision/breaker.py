"""The crash-loop breaker, one record per config file.

launchd has no start limit (a failing daemon is relaunched every ThrottleInterval
forever), so a supervised daemon that fails at start records it here and, after too
many failures in a short window, records that it gave up and exits 0 so the service
manager leaves it down. ``mlxd status`` shows the reason and ``mlxd start`` clears it.
Records are kept per config file: a daemon that gave up on one file says nothing about
a daemon of another.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlxd.supervision.state import state_dir as _state_dir
from mlxd.supervision.state import write_atomic

BREAKER_FILENAME = "breaker.json"
#: Give up after this many failed starts within ``BREAKER_WINDOW_S`` seconds.
BREAKER_LIMIT = 5
BREAKER_WINDOW_S = 120.0


def config_key(config: Path | None) -> str:
    """How a config file is named in the records: its absolute path ("" for built-in defaults)."""
    if config is None:
        return ""
    try:
        return str(config.expanduser().resolve())
    except (OSError, RuntimeError):
        return str(config.expanduser().absolute())


def breaker_file(state_dir: Path | None = None) -> Path:
    """Where failed starts and the "gave up" reasons are recorded."""
    return _state_dir(state_dir) / BREAKER_FILENAME


def _read_all(state_dir: Path | None) -> dict[str, Any]:
    try:
        data = json.loads(breaker_file(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    configs = data.get("configs") if isinstance(data, dict) else None
    return configs if isinstance(configs, dict) else {}


def read_breaker(state_dir: Path | None = None, *, config: Path | None = None) -> dict[str, Any] | None:
    """``{"failures": [{"at", "reason"}], "gave_up": {"at", "reason"} | None}`` of a config, or None."""
    entry = _read_all(state_dir).get(config_key(config))
    if not isinstance(entry, dict):
        return None
    failures = [
        f for f in entry.get("failures", []) if isinstance(f, dict) and isinstance(f.get("at"), int | float)
    ]
    gave_up = entry.get("gave_up")
    return {"failures": failures, "gave_up": gave_up if isinstance(gave_up, dict) else None}


def _write_breaker(record: dict[str, Any] | None, state_dir: Path | None, config: Path | None) -> None:
    configs = _read_all(state_dir)
    if record is None:
        configs.pop(config_key(config), None)
    else:
        configs[config_key(config)] = record
    if not configs:
        with contextlib.suppress(FileNotFoundError):
            breaker_file(state_dir).unlink()
        return
    write_atomic(breaker_file(state_dir), json.dumps({"configs": configs}, indent=2) + "\n")


def record_start_failure(
    reason: str, *, config: Path | None = None, state_dir: Path | None = None, now: float | None = None
) -> int:
    """Record a failed start of ``config``'s daemon; return how many failures fall within the window."""
    now = time.time() if now is None else now
    record = read_breaker(state_dir, config=config) or {"failures": [], "gave_up": None}
    recent = [f for f in record["failures"] if now - f["at"] <= BREAKER_WINDOW_S]
    recent.append({"at": now, "reason": reason})
    record["failures"] = recent
    _write_breaker(record, state_dir, config)
    return len(recent)


def should_give_up(
    *,
    config: Path | None = None,
    limit: int = BREAKER_LIMIT,
    window_s: float = BREAKER_WINDOW_S,
    state_dir: Path | None = None,
    now: float | None = None,
) -> bool:
    """True when ``limit`` or more starts of ``config``'s daemon failed within ``window_s`` seconds."""
    now = time.time() if now is None else now
    record = read_breaker(state_dir, config=config)
    if record is None:
        return False
    return sum(1 for f in record["failures"] if now - f["at"] <= window_s) >= limit


def record_gave_up(
    reason: str, *, config: Path | None = None, state_dir: Path | None = None, now: float | None = None
) -> None:
    """Record that ``config``'s daemon stopped trying, and why (shown by ``mlxd status``)."""
    record = read_breaker(state_dir, config=config) or {"failures": [], "gave_up": None}
    record["gave_up"] = {"at": time.time() if now is None else now, "reason": reason}
    _write_breaker(record, state_dir, config)


def gave_up_reason(
    state_dir: Path | None = None, *, config: Path | None = None, since: float | None = None
) -> str | None:
    """Why ``config``'s daemon gave up, if it did (``since``: at that time or later)."""
    record = read_breaker(state_dir, config=config)
    gave_up = record["gave_up"] if record else None
    if gave_up is None or (since is not None and float(gave_up.get("at") or 0) < since):
        return None
    return str(gave_up.get("reason") or "unknown reason")


@dataclass(frozen=True)
class Failure:
    """One failed start: why, and when (``time.time()``)."""

    reason: str
    at: float


def last_failure(
    state_dir: Path | None = None, *, config: Path | None = None, since: float | None = None
) -> Failure | None:
    """``config``'s daemon's last failed start (``since``: at that time or later), as a
    supervised daemon records it before it exits and is relaunched."""
    record = read_breaker(state_dir, config=config)
    failures = [f for f in (record["failures"] if record else []) if since is None or f["at"] >= since]
    if not failures:
        return None
    return Failure(str(failures[-1].get("reason") or "unknown reason"), float(failures[-1]["at"]))


def clear_breaker(state_dir: Path | None = None, *, config: Path | None = None) -> None:
    """Forget ``config``'s failures and any "gave up" (``mlxd start`` means: try again)."""
    _write_breaker(None, state_dir, config)
