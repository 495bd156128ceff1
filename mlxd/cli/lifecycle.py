"""Start, stop and restart the daemon through whichever manager owns it, and wait on it.

"Started" means ``GET /health`` answers 200, not that a manager accepted a command: the
daemon can still fail to bind its port or read its config after launchd launched it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from mlxd import supervision
from mlxd.cli import logfiles
from mlxd.cli.client import DaemonClient
from mlxd.cli.errors import Interrupted, StartFailed
from mlxd.cli.managers import LoginService, ServiceManager, installed_login_service
from mlxd.cli.managers.base import ServiceSpec, build_spec
from mlxd.cli.managers.process import ProcessManager, terminate
from mlxd.cli.target import Target
from mlxd.errors import MlxdError, ServiceManagerError
from mlxd.supervision import RunRecord

#: Log lines shown when a start fails.
FAILURE_LINES = 20
#: How ``wait_healthy`` says the daemon did not answer in time (it may still be starting).
NO_ANSWER = "no answer from"
#: How long one health poll waits: a starting daemon on this machine answers in
#: milliseconds, and a miss only costs another poll.
PROBE_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Outcome:
    """What start/restart achieved, for the one line the command prints."""

    url: str
    service: str
    pid: int | None
    already_running: bool = False


def daemon_pid(client: DaemonClient) -> int | None:
    """The pid the daemon reports in ``/mlxd/status``, if it answers."""
    try:
        return client.status().pid
    except MlxdError:
        return None


def wait_healthy(
    client: DaemonClient,
    timeout_s: float,
    *,
    config: Path | None = None,
    exit_code: Callable[[], int | None] = lambda: None,
    not_pid: int | None = None,
    since: float | None = None,
    interval_s: float = 0.1,
) -> str | None:
    """Poll ``/health`` until it answers 200; return None, or why it never did.

    ``exit_code`` reports a spawned process that died (no point waiting further);
    ``config``'s crash-loop record says a supervised daemon failed (launchd and systemd would
    relaunch it, to fail the same way) or gave up, counting only what was recorded from
    ``since`` on (a ``time.time()`` taken before the new daemon was started; default: now,
    for a caller whose command also stopped an old daemon, which may record a failure of its
    own meanwhile); ``not_pid`` ignores the old daemon still answering during a restart.
    """
    since, deadline = since or time.time(), time.monotonic() + timeout_s
    while True:
        # What the daemon recorded first: asking a port that some other program holds
        # without answering costs a probe's timeout.
        if (code := exit_code()) is not None:
            return f"the daemon exited with code {code}"
        if (reason := supervision.gave_up_reason(config=config, since=since)) is not None:
            return f"the daemon gave up: {reason}"
        if (failure := supervision.last_failure(config=config, since=since)) is not None:
            return failure.reason
        if client.is_healthy(PROBE_TIMEOUT_S) and (not_pid is None or daemon_pid(client) != not_pid):
            return None
        if time.monotonic() >= deadline:
            return f"{NO_ANSWER} {client.base_url}/health within {timeout_s:g}s"
        time.sleep(interval_s)


def _log_offsets() -> dict[Path, int]:
    return {path: logfiles.size(path) for path in (logfiles.console_log(), logfiles.daemon_log())}


def _failure_lines(offsets: dict[Path, int]) -> list[str]:
    """What the daemon wrote since the attempt began: its console first, else its log (a
    log rotated meanwhile is read whole); none when it wrote nothing yet (an earlier run's
    lines would read as this one's cause)."""
    for path, offset in offsets.items():
        if lines := logfiles.tail(path, FAILURE_LINES, since=offset):
            return lines
    return []


def spec_for(target: Target, *, demo: bool = False) -> ServiceSpec:
    """How to run the daemon of ``target`` (absolute paths, its drain timeout)."""
    drain = target.config.server.drain_timeout
    return build_spec(target.config_path, demo=demo, drain_timeout_s=drain)


def stop_timeout(target: Target) -> float:
    """How long a graceful stop may take: the drain timeout plus a margin."""
    return spec_for(target).stop_timeout_s


def _refuse_another_config(target: Target) -> None:
    """Raise when the running daemon runs another config file than ``target`` names: one
    daemon runs per state directory, so the target's is not running, and the command must
    not act on (or wait for) the other one."""
    if target.record is not None:
        return
    record = supervision.read_run_record()
    if record is None or supervision.config_key(record.config_path) == supervision.config_key(
        target.config_path
    ):
        return
    runs = record.config or "built-in defaults"
    stop = f"`mlxd stop --config {record.config}`" if record.config else "`mlxd stop` (with no config)"
    raise MlxdError(
        f"mlxd (pid {record.pid}) runs {runs}, not {target.config_path or 'built-in defaults'}",
        hint=f"one daemon runs at a time: {stop} stops it",
    )


def start(target: Target, *, demo: bool, timeout_s: float, warn: Callable[[str], None]) -> Outcome:
    """Start the daemon unless it already answers; raise ``StartFailed`` with its log."""
    _refuse_another_config(target)
    client = target.client(timeout=2.0)
    if client.is_healthy():
        if demo and not (target.record is not None and target.record.demo):
            warn("--demo is ignored: mlxd is already running without the demo alias")
        return Outcome(target.url, service_name(), daemon_pid(client), already_running=True)
    target = _as_configured(target)
    client = target.client(timeout=2.0)
    service = installed_login_service()
    if service is not None:
        service.check_program()  # before the breaker is cleared: status keeps its reason
    supervision.clear_breaker(config=target.config_path)
    spec = spec_for(target, demo=demo)
    offsets = _log_offsets()
    if service is not None:
        if demo:
            warn(f"--demo is ignored: the {service.name} service runs the installed command line")
        since = time.time()
        service.start(spec)
        _raise_unless_healthy(
            wait_healthy(client, timeout_s, config=target.config_path, since=since), offsets
        )
        return Outcome(target.url, service.name, daemon_pid(client))
    manager = ProcessManager()
    if (pid := manager.live_pid()) is not None:
        # A detached daemon is already up (maybe still starting, maybe on another port).
        if (failure := wait_healthy(client, timeout_s, config=target.config_path)) is not None:
            raise MlxdError(
                f"mlxd (pid {pid}) is running but {failure}",
                hint="if it uses another config, pass --config; else `mlxd restart`",
            )
        return Outcome(target.url, manager.name, pid, already_running=True)
    process = manager.spawn(spec)
    try:
        failure = wait_healthy(client, timeout_s, config=target.config_path, exit_code=process.poll)
    except KeyboardInterrupt:
        _abandon(process, manager, target)
        raise Interrupted("the start was cancelled; the daemon it launched is stopped") from None
    if failure is not None:
        _abandon(process, manager, target)
        _raise_unless_healthy(failure, offsets)
    return Outcome(target.url, manager.name, process.pid)


def install(
    target: Target, service: LoginService, *, timeout_s: float | None, say: Callable[[str], None]
) -> Outcome:
    """Install ``service`` for ``target`` and wait (``timeout_s``; None: not at all) until the
    daemon it launched answers; raise ``StartFailed`` with its log when it does not. The service
    stays installed either way: fixed, it starts with ``mlxd restart`` or at the next login.

    A detached daemon is stopped first (it holds the port the service's daemon needs); a
    daemon no manager runs (``mlxd serve`` in a terminal) is left alone and the install
    refused, before anything is written.
    """
    spec = spec_for(target)
    detached = ProcessManager()
    if (pid := detached.live_pid()) is not None:
        detached.stop(spec.stop_timeout_s)
        say(f"stopped the detached daemon (pid {pid}) first")
    elif (pid := _unmanaged_pid(target)) is not None and not _service_running():
        raise MlxdError(
            f"mlxd (pid {pid}) is already running at {target.url}, outside any service manager",
            hint="stop it first (Ctrl-C in its terminal, or `mlxd stop`), then install again",
        )
    target = _as_configured(target)  # where the service's daemon will answer
    client = target.client(timeout=2.0)
    old_pid = daemon_pid(client)  # the service's older daemon answers until it is replaced
    supervision.clear_breaker(config=target.config_path)
    offsets = _log_offsets()
    # What the old job records while it is booted out is not the new daemon's: the wait
    # counts from after the install (the new daemon takes a second to get as far as failing).
    say(f"installed {service.install(spec, spec.stop_timeout_s)}")
    if timeout_s is None:
        return Outcome(target.url, service.name, None)
    failure = wait_healthy(client, timeout_s, config=target.config_path, not_pid=old_pid)
    if failure is None:
        return Outcome(target.url, service.name, daemon_pid(client))
    if failure.startswith(NO_ANSWER):
        hint = (
            "if it is still starting, `mlxd status` says when it answers; "
            "if the log shows it failed, fix that, then `mlxd restart`"
        )
    else:
        hint = "fix what the log says, then `mlxd restart`; `mlxd logs` shows the whole log"
    raise StartFailed(
        f"mlxd is installed as a {service.name} service but did not start: {failure}",
        _failure_lines(offsets),
        hint=hint,
    )


def _service_running() -> bool:
    """Whether the installed login service (whichever it is) runs a daemon now: the daemon
    answering is then its own (a distributed daemon's rank 0 answers with its own pid, not
    the launcher's the service knows)."""
    service = installed_login_service()
    if service is None:
        return False
    try:
        return service.state().running
    except MlxdError:
        return False


def _abandon(process: subprocess.Popen[bytes], manager: ProcessManager, target: Target) -> None:
    """A start that failed leaves nothing behind, not even a daemon that is merely slow."""
    if process.poll() is None:
        terminate(process.pid, stop_timeout(target))
    process.wait()
    supervision.remove_pid_file(manager.state_dir, only_pid=process.pid)


def _raise_unless_healthy(failure: str | None, offsets: dict[Path, int]) -> None:
    if failure is not None:
        raise StartFailed(f"mlxd did not start: {failure}", _failure_lines(offsets))


def stop(target: Target) -> bool:
    """Stop the daemon however it runs; False when it was not running.

    Raises ``ServiceManagerError`` when the daemon had to be killed (SIGKILL) because it
    did not exit within the stop timeout: its open streams were cut, and the caller must
    not report a clean stop.
    """
    _refuse_another_config(target)
    timeout_s = stop_timeout(target)
    running = target.record
    stopped = False
    service = installed_login_service()
    if service is not None:
        stopped = service.stop(timeout_s)
    stopped = ProcessManager().stop(timeout_s) or stopped
    # Still running: a daemon no manager knows, e.g. `mlxd serve` in a terminal.
    pid = _unmanaged_pid(target)
    if pid is not None:
        terminate(pid, timeout_s)
        stopped = True
    if running is not None and _killed(running):
        raise ServiceManagerError(
            f"mlxd (pid {running.pid}) did not stop within {timeout_s}s and was killed (SIGKILL): "
            "requests still running were cut off",
            hint="`mlxd logs` shows what it was doing; it should stop in [server] drain_timeout plus a few seconds",
        )
    return stopped


def _killed(record: RunRecord) -> bool:
    """Whether the daemon of ``record`` is gone without a clean exit: a daemon that exits
    removes its run record last, so a record still naming it means it was killed (by us,
    or by launchd / systemd at their stop timeout)."""
    path = supervision.run_record_file()
    try:
        left = RunRecord.parse(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False
    if left is None or left.pid != record.pid or supervision.is_alive(record.pid):
        return False
    supervision.remove_run_record(only_pid=record.pid)
    return True


def _unmanaged_pid(target: Target) -> int | None:
    """The pid of the target's daemon if it still runs: from its run record, else from its
    answer (a daemon of another state directory, or of a ``--config`` it does not run)."""
    if target.record is not None and supervision.is_mlxd_process(target.record.pid):
        return target.record.pid
    client = target.client(timeout=2.0)
    pid = daemon_pid(client) if client.is_healthy(PROBE_TIMEOUT_S) else None
    return pid if pid is not None and supervision.is_mlxd_process(pid) else None


def restart(target: Target, *, demo: bool, timeout_s: float) -> Outcome:
    """Restart through the login service (launchd: bootout, then bootstrap; systemd:
    ``restart``), else stop + start; the old daemon drains either way.

    A detached daemon that had to be killed on the way is still replaced, and then
    reported (``ServiceManagerError``) rather than passed over. (A service manager stops
    and relaunches the daemon out of the CLI's sight, killing it only at its stop timeout.)
    """
    _refuse_another_config(target)
    service = installed_login_service()
    if service is None:
        again = demo or (target.record is not None and target.record.demo)
        killed: ServiceManagerError | None = None
        try:
            stop(target)
        except ServiceManagerError as error:
            killed = error
        outcome = start(_as_configured(target), demo=again, timeout_s=timeout_s, warn=lambda _: None)
        if killed is not None:
            raise ServiceManagerError(
                f"mlxd is running again at {outcome.url}, but {killed.message}", hint=killed.hint
            )
        return outcome
    service.check_program()
    old_pid = daemon_pid(target.client(timeout=2.0))
    target = _as_configured(target)
    client = target.client(timeout=2.0)
    supervision.clear_breaker(config=target.config_path)
    offsets = _log_offsets()
    spec = spec_for(target, demo=demo)
    service.restart(spec, spec.stop_timeout_s)
    _raise_unless_healthy(
        wait_healthy(client, timeout_s, config=target.config_path, not_pid=old_pid), offsets
    )
    return Outcome(target.url, service.name, daemon_pid(client))


def _as_configured(target: Target) -> Target:
    """The target of a daemon about to start: the URL its config names, not an old record's."""
    return replace(target, record=None)


def service_name() -> str:
    """``launchd``/``systemd`` when installed, ``process`` when detached, else ``none``."""
    manager = running_manager()
    return manager.name if manager is not None else "none"


def running_manager() -> ServiceManager | None:
    """The manager that owns the daemon: the installed login service, or a live detached one."""
    service = installed_login_service()
    if service is not None:
        return service
    manager = ProcessManager()
    return manager if manager.live_pid() is not None else None
