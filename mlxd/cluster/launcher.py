"""``mlxd serve`` with ``[distributed]``: start every rank through ``mlx.launch`` and watch them.

This process is what launchd, systemd or ``mlxd start`` run, so it stays up for as long
as the ranks do, and its exit says how they ended: 0 after a clean stop, an error naming
the rank and its host when one died or stopped answering (then the crash-loop breaker
counts it like a failed start). It never imports MLX; rank 0, one of its
``mlx.launch``'s children, serves HTTP.

Signals are passed on to rank 0 (SIGTERM and SIGINT drain and stop the daemon, SIGHUP
reloads its config); rank 0 then shuts the other ranks down through the command stream.
Whatever happens, no rank outlives this process: local ones are in ``mlx.launch``'s
process group, which is killed at the end, and remote ones end themselves when their
control connection closes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from mlxd.cluster.control import ControlServer, Event
from mlxd.cluster.hosts import ClusterPlan, check_reachable, plan_cluster
from mlxd.cluster.membership import ENV, Membership
from mlxd.config.distributed import DistributedConfig
from mlxd.errors import RankFailedError, StartupError, one_line

log = logging.getLogger("mlxd.cluster")
relayed = logging.getLogger("mlxd.ranks")

#: Seconds rank 0 gets to fail its streams and exit once another rank is gone, and the
#: ranks get to leave after rank 0 said it stopped cleanly.
GRACE_S = 3.0
#: Runs ``mlx.launch`` with this Python, wherever (or whether) its script is installed.
_LAUNCH = "import sys; from mlx._distributed_utils.launch import main; sys.exit(main())"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class _Ranks:
    """What the launcher knows of each rank so far."""

    size: int
    pids: dict[int, int] = field(default_factory=dict)
    joined: set[int] = field(default_factory=set)
    left: dict[int, int] = field(default_factory=dict)  # rank -> its exit code ("bye")

    @property
    def up(self) -> int:
        return len(self.joined - set(self.left))


def launch_command(
    plan: ClusterPlan, hostfile: Path, port: int, membership: str, serve: list[str]
) -> list[str]:
    """The ``mlx.launch`` command line that runs ``python -m mlxd <serve...>`` as every rank."""
    command = [sys.executable, "-c", _LAUNCH, "--hostfile", str(hostfile), "--backend", plan.backend]
    if plan.backend == "nccl":
        command += ["--nccl-port", str(port)]
    else:
        command += ["--starting-port", str(port)]
    command += ["--python", sys.executable, "--env", f"{ENV}={membership}", "--env", "PYTHONUNBUFFERED=1"]
    return [*command, "--", "-m", "mlxd", *serve]


class Launcher:
    """Starts the ranks, relays their output to the log, and decides how the daemon ends."""

    def __init__(self, config: DistributedConfig, serve: list[str]) -> None:
        self.config = config
        self.serve = serve
        self.plan = plan_cluster(config)
        self._ranks = _Ranks(self.plan.size)
        self._stopping = threading.Event()
        self._reload = threading.Event()
        self._stop_sent = False
        self._tail: list[str] = []

    def describe(self, rank: int) -> str:
        """``rank 1 (10.0.0.2)``."""
        return f"rank {rank} ({self.plan.hosts[rank].name})"

    def run(self) -> None:
        """Serve until the daemon stops: return on a clean stop, raise naming what failed."""
        check_reachable(self.plan)
        token = secrets.token_hex(16)
        server = ControlServer(
            self.plan.control_address,
            self.plan.size,
            token,
            self.config.heartbeat_timeout,
            self.config.start_timeout,
        )
        membership = Membership(
            rank=0,
            hosts=self.plan.names,
            backend=self.plan.backend,
            control_host=self.plan.control_address,
            control_port=server.port,
            token=token,
            timeout=self.config.heartbeat_timeout,
            start_timeout=self.config.start_timeout,
        )
        with _private_dir() as folder, _forwarded_signals(self):
            hostfile = folder / "hosts.json"
            hostfile.write_text(json.dumps(self.plan.hostfile()), encoding="utf-8")
            command = launch_command(self.plan, hostfile, self.config.port, membership.to_env(), self.serve)
            env = {k: v for k, v in os.environ.items() if k != ENV}
            log.info(
                "starting %d ranks over %s: %s", self.plan.size, self.plan.backend, ", ".join(self.plan.names)
            )
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,  # never written: mlx.launch would spin on a closed stdin
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the local ranks die with it
                env=env,
            )
            relay = threading.Thread(
                target=self._relay, args=(process,), name="mlxd-ranks-output", daemon=True
            )
            relay.start()
            try:
                self._watch(server, process)
            finally:
                server.close()
                _end(process)
                relay.join(2.0)

    # ---- watching -----------------------------------------------------------------------

    def _watch(self, server: ControlServer, process: subprocess.Popen[bytes]) -> None:
        ranks = self._ranks
        deadline = time.monotonic() + self.config.start_timeout
        while True:
            self._pass_signals()
            try:
                event: Event | None = server.events.get(timeout=0.2)
            except queue.Empty:
                event = None
            if event is not None:
                known = event.rank in ranks.left
                self._apply(event, server)
                if event.kind == "joined" and len(ranks.joined) == ranks.size:
                    yield_cpu(process.pid)
                if event.kind == "lost" and not known:
                    self._fail(server, process, f"{self.describe(event.rank)} {event.reason}")
                if event.kind == "bye" and event.code != 0 and event.rank != 0:
                    self._fail(
                        server,
                        process,
                        f"{self.describe(event.rank)} failed: {event.reason or 'exit code ' + str(event.code)}",
                    )
                if event.kind == "bye" and event.rank == 0:
                    self._finish(process, event)
                    return
                continue
            if process.poll() is not None:
                self._drain_events(server)
                if 0 in ranks.left:
                    self._finish(process, Event("bye", 0, code=ranks.left[0]))
                    return
                if self._stopping.is_set() and not ranks.pids:
                    return  # stopped before any rank came up
                said = f": {self._tail[-1]}" if self._tail else ""
                raise StartupError(f"the ranks exited (mlx.launch code {process.returncode}){said}")
            if len(ranks.joined) < ranks.size and time.monotonic() > deadline:
                missing = min(set(range(ranks.size)) - ranks.joined)
                what = "did not join the others" if missing in ranks.pids else "did not start"
                self._fail(
                    server,
                    process,
                    f"{self.describe(missing)} {what} within {self.config.start_timeout:g}s",
                    start=True,
                )
            if self._stopping.is_set() and 0 not in ranks.pids:
                return  # a stop before rank 0 is up: nothing to drain

    def _apply(self, event: Event, server: ControlServer) -> None:
        ranks = self._ranks
        before = ranks.up
        if event.kind == "hello":
            ranks.pids[event.rank] = event.pid
        elif event.kind == "joined":
            ranks.joined.add(event.rank)
            if len(ranks.joined) == ranks.size:
                log.info("all %d ranks joined", ranks.size)
        elif event.kind == "bye":
            ranks.left[event.rank] = event.code
        elif event.kind == "lost":
            ranks.left.setdefault(event.rank, -1)
        if ranks.up != before:
            server.send(0, {"t": "ranks", "up": ranks.up})

    def _drain_events(self, server: ControlServer) -> None:
        while True:
            try:
                self._apply(server.events.get_nowait(), server)
            except queue.Empty:
                return

    def _finish(self, process: subprocess.Popen[bytes], bye: Event) -> None:
        """Rank 0 ended: wait a little for the others to leave, then say how it went."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(GRACE_S)
        if bye.code != 0:
            raise RankFailedError(bye.reason or f"rank 0 exited with code {bye.code}")
        log.info("all ranks stopped")

    def _fail(
        self, server: ControlServer, process: subprocess.Popen[bytes], reason: str, *, start: bool = False
    ) -> None:
        """A rank is gone: rank 0 fails its streams and exits, then everything ends."""
        log.error("%s: stopping the daemon", reason)
        if 0 in self._ranks.pids and 0 not in self._ranks.left:
            server.send(0, {"t": "fail", "reason": reason})
            deadline = time.monotonic() + GRACE_S
            while time.monotonic() < deadline and 0 not in self._ranks.left:
                with contextlib.suppress(queue.Empty):
                    self._apply(server.events.get(timeout=0.1), server)
        if start:
            raise StartupError(reason)
        raise RankFailedError(reason)

    # ---- signals and output -------------------------------------------------------------

    def signal(self, signum: int) -> None:
        """A signal for the daemon (called from the signal handler)."""
        if signum == signal.SIGHUP:
            self._reload.set()
        else:
            self._stopping.set()

    def _pass_signals(self) -> None:
        pid = self._ranks.pids.get(0)
        if pid is None:
            return
        if self._reload.is_set():
            self._reload.clear()
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGHUP)
        if self._stopping.is_set() and not self._stop_sent:
            self._stop_sent = True
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)

    def _relay(self, process: subprocess.Popen[bytes]) -> None:
        """Every line the ranks write (the followers' log, rank 0's last words) into the log."""
        assert process.stdout is not None
        for raw in process.stdout:
            line = one_line(_ANSI.sub("", raw.decode(errors="replace")).rstrip())
            if not line.strip():
                continue
            self._tail = [*self._tail[-4:], line]
            relayed.info("%s", line)


def yield_cpu(pid: int) -> None:
    """Give ``mlx.launch`` (``pid``) the lowest CPU priority once its ranks are up.

    Its threads that relay each rank's output wait in ``select`` on the rank's stdin pipe,
    which is always writable, so they never sleep: on a machine with few cores they take
    CPU time from the ranks (on 2 busy cores, 16 clients got 728 tokens/s before they
    yielded, 1002 after). The ranks, started already, keep their own priority. Linux sets it
    per thread (listed under /proc), macOS per process."""
    try:
        threads = [int(task.name) for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        threads = [pid]
    for thread in threads:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, thread, 19)


def _end(process: subprocess.Popen[bytes]) -> None:
    """``mlx.launch`` and every rank it started here: gone, one way or another."""
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, GRACE_S)):
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait)
    # Ranks that outlived mlx.launch itself (it died first) are still in its group.
    with contextlib.suppress(OSError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def _private_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mlxd-ranks-") as name:
        os.chmod(name, 0o700)
        yield Path(name)


@contextlib.contextmanager
def _forwarded_signals(launcher: Launcher) -> Iterator[None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        launcher.signal(signum)

    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def serve_distributed(config: DistributedConfig, serve: list[str]) -> None:
    """Run the ranks until the daemon stops (the ``mlxd serve`` of a distributed config)."""
    Launcher(config, serve).run()
