"""The detached daemon's pid file, and what is known about a process from its pid.

A pid whose process is gone, is a zombie, or was reused by a program that is not
``mlxd serve`` is stale and gets removed. Linux answers from /proc; macOS from ``ps``
and ``lsof``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from mlxd.supervision.state import state_dir as _state_dir
from mlxd.supervision.state import write_atomic

PID_FILENAME = "mlxd.pid"
#: Linux has /proc; macOS does not, and gets the same answers from ``ps``.
_HAS_PROC = Path("/proc/self/stat").exists()


def pid_file(state_dir: Path | None = None) -> Path:
    """Where the detached daemon's pid is recorded."""
    return _state_dir(state_dir) / PID_FILENAME


def write_pid_file(pid: int, state_dir: Path | None = None) -> Path:
    """Record ``pid`` as the detached daemon's."""
    path = pid_file(state_dir)
    write_atomic(path, f"{pid}\n")
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


def _output(argv: list[str]) -> str | None:
    """What a short-lived tool printed, None when it failed or printed nothing."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout.strip()
    return text if out.returncode == 0 and text else None


def _ps(pid: int, field: str) -> str | None:
    """One ``ps`` column for ``pid`` (portable: macOS has no /proc), None when no such process."""
    return _output(["ps", "-p", str(pid), "-o", f"{field}="])


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


def listening_pid(port: int) -> int | None:
    """The pid of a process listening on TCP ``port`` on this machine, when it can be told.

    Linux: the socket's inode from /proc/net/tcp{,6}, then the process holding it (only
    the user's own processes are visible). Elsewhere: ``lsof``. None when unknown.
    """
    if _HAS_PROC:
        return _proc_listening_pid(port)
    first = (_output(["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-t"]) or "").split()[:1]
    return int(first[0]) if first and first[0].isdigit() else None


_LISTEN = "0A"  # the TCP state column of /proc/net/tcp: LISTEN


def _proc_listening_pid(port: int) -> int | None:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == _LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    return None
