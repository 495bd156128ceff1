"""A launchctl stand-in that runs the job, for tests of the login service with a real daemon.

launchd does not exist on Linux, so this emulates the part of it mlxd drives, closely enough
that ``mlxd install/start/stop/restart/status`` run a real daemon through it:

- ``bootstrap DOMAIN PLIST`` loads the job and, with ``RunAtLoad``, launches its
  ``ProgramArguments`` as launchd does: a new session, the plist's ``WorkingDirectory``,
  ``Umask``, ``StandardOutPath``/``StandardErrorPath`` and ``EnvironmentVariables`` over
  launchd's own few variables (``HOME``, ``USER``, ``LOGNAME``, ``SHELL``, ``TMPDIR``), none of
  the caller's shell. A loaded job cannot be bootstrapped again (exit 5).
- ``bootout TARGET`` returns at once and stops the job behind the caller's back: SIGTERM, then
  SIGKILL after the plist's ``ExitTimeOut``; the job stays loaded until its process is gone.
  Not loaded: exit 3.
- ``print TARGET`` shows ``state``/``pid`` (exit 113 when not loaded); ``print DOMAIN`` exits 0;
  ``kickstart TARGET`` launches a loaded job that is not running; ``enable`` does nothing.

A program that cannot be launched (its Python gone) leaves the job loaded and not running,
``last exit code = 78``, as launchd reports it. It follows launchctl as mlxd drives it, not
all of launchd: it does not relaunch a job that exits (``KeepAlive``; the daemon, told by
``MLXD_SUPERVISED`` in the plist, records why it failed before it exits), nor throttle.
Every call is appended to ``$MLXD_SHIM_LOG``; the jobs live in ``$MLXD_SHIM_STATE``.
"""

from __future__ import annotations

import json
import os
import plistlib
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

LAUNCHD_VARIABLES = ("HOME", "USER", "LOGNAME", "SHELL", "TMPDIR")


def _job_file(target: str) -> Path:
    return Path(os.environ["MLXD_SHIM_STATE"]) / (target.rsplit("/", 1)[-1] + ".json")


def _read(target: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads(_job_file(target).read_text()))
    except (OSError, ValueError):
        return None


def _write(target: str, job: dict[str, Any]) -> None:
    path = _job_file(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(job))
    temporary.replace(path)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a killed child of an init that does not reap stays a zombie
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


#: What launchd reports for a job whose program could not be spawned (EX_CONFIG).
SPAWN_FAILED = 78


def _launch(plist: dict[str, Any]) -> int | None:
    env = {name: os.environ[name] for name in LAUNCHD_VARIABLES if name in os.environ}
    env.update(plist.get("EnvironmentVariables", {}))
    out = open(plist.get("StandardOutPath", os.devnull), "ab")  # noqa: SIM115 (the child keeps it)
    err = open(plist.get("StandardErrorPath", os.devnull), "ab")  # noqa: SIM115
    umask = plist.get("Umask")
    try:
        process = subprocess.Popen(
            plist["ProgramArguments"],
            cwd=plist.get("WorkingDirectory", "/"),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            umask=umask if isinstance(umask, int) else -1,
        )
    except OSError:
        return None
    return process.pid


def bootstrap(domain: str, plist_path: str) -> int:
    plist = plistlib.loads(Path(plist_path).read_bytes())
    target = f"{domain}/{plist['Label']}"
    if _read(target) is not None:
        sys.stderr.write("Bootstrap failed: 5: Input/output error\n")
        return 5
    job: dict[str, Any] = {"plist": plist_path, "pid": None, "stopping": False, "last_exit": None}
    if plist.get("RunAtLoad"):
        _run(job, plist)
    _write(target, job)
    return 0


def _run(job: dict[str, Any], plist: dict[str, Any]) -> None:
    job["pid"] = _launch(plist)
    if job["pid"] is None:
        job["last_exit"] = SPAWN_FAILED


def bootout(target: str) -> int:
    job = _read(target)
    if job is None:
        sys.stderr.write("Boot-out failed: 3: No such process\n")
        return 3
    if not job["stopping"]:
        job["stopping"] = True
        _write(target, job)
        subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, "_reap", target],
            env=dict(os.environ),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return 0


def reap(target: str) -> int:
    """bootout's second half: stop the job's process as launchd does, then unload it."""
    job = _read(target)
    if job is None:
        return 0
    pid = job["pid"]
    if _alive(pid):
        plist = plistlib.loads(Path(job["plist"]).read_bytes())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + float(plist.get("ExitTimeOut", 20))
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
    _job_file(target).unlink(missing_ok=True)
    return 0


def print_(target: str) -> int:
    if target.count("/") == 1:  # a domain
        return 0
    job = _read(target)
    if job is None:
        sys.stderr.write(f'Could not find service "{target.rsplit("/", 1)[-1]}" in domain\n')
        return 113
    running = _alive(job["pid"])
    lines = [f"{target} = {{", f"\tstate = {'running' if running else 'not running'}"]
    if running:
        lines.append(f"\tpid = {job['pid']}")
    last = job.get("last_exit")
    lines += [f"\tlast exit code = {'(never exited)' if last is None else last}", "}"]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def kickstart(target: str) -> int:
    job = _read(target)
    if job is None:
        return 113
    if not _alive(job["pid"]):
        _run(job, plistlib.loads(Path(job["plist"]).read_bytes()))
        _write(target, job)
    return 0


def main(args: list[str]) -> int:
    if args[:1] != ["_reap"]:
        with Path(os.environ["MLXD_SHIM_LOG"]).open("a", encoding="utf-8") as log:
            log.write(json.dumps(args) + "\n")
    command, rest = args[0], args[1:]
    if command == "bootstrap":
        return bootstrap(rest[0], rest[1])
    if command == "bootout":
        return bootout(rest[0])
    if command == "_reap":
        return reap(rest[0])
    if command == "print":
        return print_(rest[0])
    if command == "kickstart":
        return kickstart(rest[-1])
    if command == "enable":
        return 0
    sys.stderr.write(f"launchctl stand-in: {command} is not emulated\n")
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
