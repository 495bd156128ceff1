"""Supervision records shared by the CLI and the daemon (stdlib plus the platform paths).

Two small files live in the state directory:

- ``mlxd.pid``: the pid of a daemon started as a detached process by ``mlxd start``.
  A pid whose process is gone, is a zombie, or was reused by a program that is not
  ``mlxd serve`` is stale and gets removed.
- ``breaker.json``: the crash-loop breaker. launchd has no start limit (a failing daemon
  is relaunched every ThrottleInterval forever), so a supervised daemon that fails at
  start records it here and, after too many failures in a short window, records that it
  gave up and exits 0 so the service manager leaves it down. ``mlxd status`` shows the
  reason and ``mlxd start`` clears the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

PID_FILENAME = "mlxd.pid"
BREAKER_FILENAME = "breaker.json"
#: Give up after this many failed starts within ``BREAKER_WINDOW_S`` seconds.
BREAKER_LIMIT = 5
BREAKER_WINDOW_S = 120.0
#: Linux has /proc; macOS does not, and gets the same answers from ``ps``.
_HAS_PROC = Path("/proc/self/stat").exists()


def _state_dir(state_dir: Path | None) -> Path:
    if state_dir is not None:
        return state_dir
    from mlxd.config import paths  # deferred: keeps this module cheap to import

    return paths.state_dir()


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temp file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --- pid file -------------------------------------------------------------------------


def pid_file(state_dir: Path | None = None) -> Path:
    """Where the detached daemon's pid is recorded."""
    return _state_dir(state_dir) / PID_FILENAME


def write_pid_file(pid: int, state_dir: Path | None = None) -> Path:
    """Record ``pid`` as the detached daemon's."""
    path = pid_file(state_dir)
    _write_atomic(path, f"{pid}\n")
    return path


def read_pid_file(state_dir: Path | None = None) -> int | None:
    """The recorded pid, or None when there is no (readable, sane) pid file."""
    try:
        text = pid_file(state_dir).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def remove_pid_file(state_dir: Path | None = None, *, only_pid: int | None = None) -> None:
    """Remove the pid file; with ``only_pid``, only when it still names that process."""
    if only_pid is not None and read_pid_file(state_dir) != only_pid:
        return
    pid_file(state_dir).unlink(missing_ok=True)


def _ps(pid: int, field: str) -> str | None:
    """One ``ps`` column for ``pid`` (portable: macOS has no /proc), None when no such process."""
    try:
        out = subprocess.run(
            ["ps", "-p", str(pid), "-o", f"{field}="],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and text else None


def process_command(pid: int) -> str | None:
    """The command line of process ``pid``, or None when it does not exist."""
    if _HAS_PROC:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None
    return _ps(pid, "command")


def _is_zombie(pid: int) -> bool:
    if _HAS_PROC:
        try:
            # The state follows the parenthesised command name, which may itself hold spaces.
            stat = Path(f"/proc/{pid}/stat").read_text()
            return stat.rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            return False
    state = _ps(pid, "stat")
    return state is not None and state.startswith("Z")


def is_alive(pid: int) -> bool:
    """True when ``pid`` is a running process (a zombie has exited: it only awaits reaping)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, it is just not ours
    return not _is_zombie(pid)


def looks_like_mlxd(command: str | None) -> bool:
    """True when a command line is ``mlxd serve`` (``python -m mlxd serve`` or the script)."""
    if not command:
        return False
    words = command.split()
    return "serve" in words and any(w == "mlxd" or w.endswith("/mlxd") for w in words)


def is_mlxd_process(pid: int) -> bool:
    """True when ``pid`` is alive and is an ``mlxd serve`` (not a stranger that reused it)."""
    return is_alive(pid) and looks_like_mlxd(process_command(pid))


def live_daemon_pid(state_dir: Path | None = None) -> int | None:
    """The recorded detached daemon's pid if it still runs; a stale pid file is removed."""
    pid = read_pid_file(state_dir)
    if pid is None:
        pid_file(state_dir).unlink(missing_ok=True)  # garbage in the file is stale too
        return None
    if is_mlxd_process(pid):
        return pid
    remove_pid_file(state_dir, only_pid=pid)
    return None


# --- crash-loop breaker ---------------------------------------------------------------


def breaker_file(state_dir: Path | None = None) -> Path:
    """Where failed starts and the "gave up" reason are recorded."""
    return _state_dir(state_dir) / BREAKER_FILENAME


def read_breaker(state_dir: Path | None = None) -> dict[str, Any] | None:
    """``{"failures": [{"at", "reason"}], "gave_up": {"at", "reason"} | None}``, or None."""
    try:
        data = json.loads(breaker_file(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    failures = [
        f for f in data.get("failures", []) if isinstance(f, dict) and isinstance(f.get("at"), int | float)
    ]
    gave_up = data.get("gave_up")
    return {"failures": failures, "gave_up": gave_up if isinstance(gave_up, dict) else None}


def _write_breaker(record: dict[str, Any], state_dir: Path | None) -> None:
    _write_atomic(breaker_file(state_dir), json.dumps(record, indent=2) + "\n")


def record_start_failure(reason: str, *, state_dir: Path | None = None, now: float | None = None) -> int:
    """Record a failed start; return how many failures fall within the window."""
    now = time.time() if now is None else now
    record = read_breaker(state_dir) or {"failures": [], "gave_up": None}
    recent = [f for f in record["failures"] if now - f["at"] <= BREAKER_WINDOW_S]
    recent.append({"at": now, "reason": reason})
    record["failures"] = recent
    _write_breaker(record, state_dir)
    return len(recent)


def should_give_up(
    *,
    limit: int = BREAKER_LIMIT,
    window_s: float = BREAKER_WINDOW_S,
    state_dir: Path | None = None,
    now: float | None = None,
) -> bool:
    """True when ``limit`` or more starts failed within the last ``window_s`` seconds."""
    now = time.time() if now is None else now
    record = read_breaker(state_dir)
    if record is None:
        return False
    return sum(1 for f in record["failures"] if now - f["at"] <= window_s) >= limit


def record_gave_up(reason: str, *, state_dir: Path | None = None, now: float | None = None) -> None:
    """Record that the daemon stopped trying, and why (shown by ``mlxd status``)."""
    record = read_breaker(state_dir) or {"failures": [], "gave_up": None}
    record["gave_up"] = {"at": time.time() if now is None else now, "reason": reason}
    _write_breaker(record, state_dir)


def gave_up_reason(state_dir: Path | None = None) -> str | None:
    """The recorded reason the daemon gave up, if it did."""
    record = read_breaker(state_dir)
    gave_up = record["gave_up"] if record else None
    if gave_up is None:
        return None
    return str(gave_up.get("reason") or "unknown reason")


def clear_breaker(state_dir: Path | None = None) -> None:
    """Forget failures and any "gave up" (``mlxd start`` means: try again)."""
    with contextlib.suppress(FileNotFoundError):
        breaker_file(state_dir).unlink()
