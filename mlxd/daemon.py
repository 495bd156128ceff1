"""The composition root: it wires the config store, the engine, the app, the watcher and
the server, and applies each config generation to the engine. It builds nothing else.

SIGTERM or Ctrl-C drains: new requests get 503, requests in flight run on for up to
``drain_timeout``; then every sequence still running ends with an error event (503
``unavailable`` for a request not streaming yet), the server closes and the process
exits 0, within the bounds of ``mlxd.supervision.stopping``. A second Ctrl-C ends the
sequences at once. SIGHUP reloads the config.

An error the daemon cannot serve past goes through one path, ``Fatal``: new requests get
503 from then on and every stream in flight or request waiting for a model ends with a 503
naming it. For a single daemon that is an MLX runtime that cannot start (a broken install):
the server closes and ``run`` raises the error, which ``mlxd serve`` reports in one line and
exits 1 with (a supervisor sees a failed daemon, not a hung one).

A rank of a distributed daemon runs here too: rank 0 is this daemon with its worker in
lockstep with the others (``run`` with a ``Membership``), a follower runs the worker
alone (``follow``). Both stay in touch with the launcher; rank 0 goes through ``Fatal``
and exits at once when the launcher says another rank is gone or its worker fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mlxd import supervision
from mlxd.cluster.control import ControlClient
from mlxd.cluster.membership import Membership
from mlxd.config.diff import ConfigDiff
from mlxd.config.schema import MlxdConfig
from mlxd.config.store import ConfigStore
from mlxd.config.watcher import watch_config
from mlxd.errors import MlxdError, RankFailedError, UnavailableError
from mlxd.http.app import create_app
from mlxd.http.state import DaemonState
from mlxd.hub import model_directory
from mlxd.protocol.admin import DistributedStatus
from mlxd.runtime.cluster import ClusterSpec
from mlxd.runtime.engine import Engine
from mlxd.runtime.from_config import keep_alive_for, runtime_settings, spec_for, units_of
from mlxd.runtime.mlx.handle import start_failure
from mlxd.runtime.mlx_engine import MlxEngine, safetensors_bytes
from mlxd.server import ConnectionCap, HttpServer, drain, signal_handlers
from mlxd.supervision.stopping import WORKER_STOP_S

log = logging.getLogger("mlxd")

#: Seconds rank 0 gives the error events of its streams to reach their clients before it
#: exits, once another rank is gone.
FAIL_EXIT_S = 0.5
#: How long shutting down waits for the config watcher to end by itself before cancelling it.
_WATCHER_STOP_S = 2.0


def mlx_engine(
    store: ConfigStore,
    connections: ConnectionCap | None = None,
    cluster: ClusterSpec | None = None,
    on_fatal: Callable[[MlxdError], None] | None = None,
) -> MlxEngine:
    """The engine ``mlxd serve`` runs: MLX on one worker thread, models from the config's paths
    (validated and confined by the hub; a missing download names the alias to pull). Once
    its thread has imported mlx-lm, which resets the open-file limit, ``connections`` fits
    the limit again. As rank 0 of ``cluster`` it holds a share of each model: its estimate
    is that share. ``on_fatal`` hears of a worker that cannot start (and, as rank 0, of one
    that fails)."""
    size = cluster.size if cluster is not None else 1
    return MlxEngine(
        runtime_settings(store.current),
        lambda spec: model_directory(spec, store.current),
        estimate_bytes=lambda path: safetensors_bytes(path) // size,
        worker_stop_s=WORKER_STOP_S,
        on_worker_start=connections.fit if connections is not None else None,
        cluster=cluster,
        on_fatal=on_fatal,
    )


def shutting_down(reason: str | None = None) -> UnavailableError:
    """What a request gets when the daemon stops under it: retry in a moment (a restart)."""
    return UnavailableError(
        f"mlxd is shutting down: {reason}" if reason else "mlxd is shutting down", retry_after=5
    )


class Daemon:
    """Runs the whole daemon in the current process until a signal stops it."""

    def __init__(self, store: ConfigStore, engine: Engine, connections: ConnectionCap | None = None) -> None:
        self.store = store
        self.engine = engine
        #: Open connections and their cap, for every listener.
        self.connections = connections or ConnectionCap(store.current.server.max_connections)
        self.state = DaemonState(store, engine, reload=self.reload)
        self._stop = asyncio.Event()
        #: Set by a second Ctrl-C: end the drain now.
        self._now = asyncio.Event()
        self._server: HttpServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Why ``serve`` ended early (``fail``), for whoever ran it to raise.
        self.failure: MlxdError | None = None
        #: Set once ``serve`` shuts down: config changes no longer reach the engine.
        self._closing = False

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background task, keeping a reference so it is not collected mid-flight."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> int:
        """Re-read the config file (the same path SIGHUP and the watcher take)."""
        return (await asyncio.to_thread(self.store.reload)).generation

    def _on_config(self, old: MlxdConfig, new: MlxdConfig, diff: ConfigDiff) -> None:
        """Store subscriber (any thread): apply the new generation on the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply, new)

    def _apply(self, config: MlxdConfig) -> None:
        if self._closing:
            return
        self.engine.configure(runtime_settings(config), units_of(config))
        self.connections.fit(config.server.max_connections)
        log.info("config generation %d applied", self.store.generation)

    async def _preload(self) -> None:
        config = self.store.current
        for alias, model in config.models.items():
            if model.preload:
                try:
                    await self.engine.load(alias, spec_for(model), keep_alive_for(config, alias))
                except Exception as exc:
                    if self.failure is None:  # else the failure is the one line to read
                        log.error("could not preload %s: %s", alias, exc)

    def abort(self, error: MlxdError) -> int:
        """The daemon cannot go on: refuse new requests (503) from now on, and end every
        stream in flight and every request waiting for a model with a 503 naming ``error``.
        Returns how many streams were running."""
        self.state.draining = True
        return self.engine.abort(shutting_down(error.message))

    def fail(self, error: MlxdError) -> None:
        """End ``serve`` because of ``error`` (after ``abort``): the server closes, giving the
        streams' error events a moment to reach their clients, and ``failure`` says why."""
        self.failure = error
        if self._server is not None:
            self._server.exit()
        self._stop.set()

    def _begin_stop(self) -> None:
        """Refuse new requests from now on and drain (once, whatever asks for it)."""
        if not self.state.draining:
            self.state.draining = True
            self._spawn(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        timeout = self.store.current.server.drain_timeout
        log.info("draining: finishing in-flight requests (up to %gs)", timeout)
        await drain(lambda: self.engine.status().active_sequences, timeout, self._now)
        # Whatever still runs ends now, each stream with its error event and a proper end,
        # before the server closes the connections.
        ended = self.engine.abort(shutting_down())
        if ended:
            why = "stopping at once" if self._now.is_set() else f"drain_timeout ({timeout:g}s) reached"
            log.warning("%s: ended %d running sequence(s) with an error", why, ended)
        if self._server is not None:
            self._server.exit()
        self._stop.set()

    async def serve(self, ready: asyncio.Event | None = None, *, signals: bool = True) -> None:
        """Start everything, serve until stopped, shut down cleanly.

        ``signals=False`` lets tests run the daemon on a thread (only the main thread
        may install signal handlers); they stop it with ``request_stop``.
        """
        self._loop = asyncio.get_running_loop()
        unsubscribe = self.store.subscribe(self._on_config)
        await self.engine.start()
        server = self.store.current.server
        self.connections.fit()
        self._server = HttpServer(
            create_app(self.state),
            host=server.host,
            port=server.port,
            request_timeout=server.request_timeout,
            connections=self.connections,
            # Apps hard-wired to Ollama's port get the same app on loopback.
            extra=(("127.0.0.1", server.ollama_port),) if server.ollama_port else (),
        )
        handlers = signal_handlers(self._loop, self.request_stop, self._on_sighup, self._on_interrupt)
        with handlers if signals else contextlib.nullcontext():
            watcher = asyncio.create_task(watch_config(self.store, self._stop), name="mlxd-watcher")
            preload = asyncio.create_task(self._preload(), name="mlxd-preload")
            listening = asyncio.Event()
            announce = asyncio.create_task(self._announce(listening, ready, record=signals))
            try:
                await self._server.serve(listening)
            finally:
                announce.cancel()
                self._stop.set()
                self._closing = True  # a reload still in flight applies nothing now
                unsubscribe()
                # The watcher ends by itself within a step of its watch once stopped; waiting
                # lets a reload in flight finish before the engine stops.
                with contextlib.suppress(Exception):  # its own error, or the wait timed out
                    await asyncio.wait_for(asyncio.shield(watcher), _WATCHER_STOP_S)
                for task in (watcher, preload):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                await self.engine.stop()
                # Last: a record left behind tells `mlxd stop` the daemon did not exit cleanly.
                if signals:
                    supervision.remove_run_record(only_pid=os.getpid())
                log.info("stopped")

    async def _announce(self, listening: asyncio.Event, ready: asyncio.Event | None, *, record: bool) -> None:
        """Once the socket listens: the run record the CLI finds us by (the process's own
        daemon only, not a test's thread), then ``ready``."""
        await listening.wait()
        server = self.store.current.server
        if record and self.bound_port is not None:
            supervision.write_run_record(server.host, self.bound_port, self.store.path)
        if ready is not None:
            ready.set()

    def request_stop(self) -> None:
        """Drain and stop (thread-safe; what SIGTERM does)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._begin_stop)

    def _on_interrupt(self) -> None:
        """Ctrl-C: drain and stop. Once a stop is under way, Ctrl-C ends what still runs at
        once; once more, it closes the connections without waiting for them."""
        if not self.state.draining:
            self._begin_stop()
        elif not self._now.is_set():
            log.warning("Ctrl-C again: stopping now")
            self._now.set()
        elif self._server is not None:
            self._server.exit(now=True)

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading the config")
        self._spawn(self._safe_reload())

    async def _safe_reload(self) -> None:
        try:
            await self.reload()
        except Exception as exc:
            log.error("reload rejected, the old config keeps serving: %s", exc)

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (useful with port 0)."""
        return self._server.bound_port if self._server is not None else None


#: Longest a thread keeps the GIL while another waits for it (Python's default: 5 ms). The
#: MLX worker lets go of the GIL while the accelerator computes and wants it back at once to
#: queue the next step; with the default it waited up to 5 ms each time the event loop or
#: the tokenizer was running Python, against decode steps of 5-15 ms on a GPU.
GIL_SWITCH_INTERVAL = 0.0005


def run(store: ConfigStore, member: Membership | None = None) -> None:
    """``mlxd serve``: serve the store's config in the foreground until a signal stops it
    (as rank 0 of a distributed daemon with ``member``). Raises the error that ended it
    early, if one did (a single daemon's MLX runtime that could not start)."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    connections = ConnectionCap(store.current.server.max_connections)
    if member is None:
        asyncio.run(_serve_alone(store, connections))
    else:
        asyncio.run(_serve_rank_zero(store, member, connections))


class Fatal:
    """The daemon's one way to end on an error it cannot serve past.

    Call it from any thread; the first error wins. On the event loop the daemon refuses new
    requests and ends every stream in flight and every request waiting for a model with a
    503 naming the error (``Daemon.abort``); then ``end`` finishes the process its own way.
    """

    def __init__(self, end: Callable[[MlxdError], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._end = end
        self._lock = threading.Lock()
        self._ending = False
        #: The daemon it stops (set once made: the daemon's engine is made with this).
        self.daemon: Daemon | None = None

    def __call__(self, error: MlxdError) -> None:
        with self._lock:
            if self._ending:
                return
            self._ending = True
        self._loop.call_soon_threadsafe(self._fail, error)

    def _fail(self, error: MlxdError) -> None:
        failed = self.daemon.abort(error) if self.daemon is not None else 0
        self._end(error)
        if failed:
            log.info("failed %d stream(s) in flight", failed)


async def _serve_alone(store: ConfigStore, connections: ConnectionCap) -> None:
    """The single daemon. Its fatal error is a worker that cannot start: the server closes
    and the error is raised, for ``mlxd serve`` to report (one line and the crash-loop
    breaker, like any failed start) and exit 1."""
    fatal = Fatal(lambda error: daemon.fail(error))
    daemon = fatal.daemon = Daemon(store, mlx_engine(store, connections, on_fatal=fatal), connections)
    await daemon.serve()
    if daemon.failure is not None:
        raise daemon.failure


def _control(member: Membership) -> ControlClient:
    """This rank's connection to the launcher, made (retrying) within the start timeout."""
    control = ControlClient(
        (member.control_host, member.control_port), member.rank, member.token, member.timeout
    )
    control.connect(time.monotonic() + member.start_timeout)
    return control


async def _serve_rank_zero(store: ConfigStore, member: Membership, connections: ConnectionCap) -> None:
    """Rank 0: its fatal errors are another rank gone (the launcher says so) and its worker
    failing. It tells the launcher and exits at once, without closing anything: its worker
    may be stuck in a collective that never returns."""
    control = _control(member)
    loop = asyncio.get_running_loop()

    def end(error: MlxdError) -> None:
        reason = f"{error.message} ({error.hint})" if error.hint else error.message
        log.error("%s: stopping the daemon", reason)
        control.bye(1, reason)
        loop.call_later(FAIL_EXIT_S, _exit_now)
        threading.Timer(FAIL_EXIT_S * 4, _exit_now).start()

    fatal = Fatal(end)

    def rank_lost(reason: str) -> None:  # from the control thread
        fatal(RankFailedError(reason))

    def worker_failed(error: MlxdError) -> None:
        # A collective fails when a peer dies, often before the launcher says which one
        # it was: give the launcher's message, which names the rank, a moment to win.
        loop.call_later(FAIL_EXIT_S * 2, fatal, error)

    cluster = ClusterSpec(member.rank, member.size, member.hosts, member.backend, joined=control.joined)
    engine = mlx_engine(store, connections, cluster, worker_failed)
    daemon = fatal.daemon = Daemon(store, engine, connections)
    daemon.state.distributed = lambda: DistributedStatus(
        backend=member.backend,
        size=member.size,
        hosts=list(member.hosts),
        ranks_up=control.ranks_up,
        step_seconds=list(engine.stats.rank_step_seconds),
    )
    control.start(on_lost=rank_lost, on_fail=rank_lost)
    try:
        await daemon.serve()
    except BaseException as exc:
        control.bye(1, str(exc) or type(exc).__name__)
        raise
    control.bye(0)


def _exit_now() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    supervision.remove_run_record(only_pid=os.getpid())
    os._exit(1)


def follow(member: Membership) -> bool:
    """A follower rank: the MLX worker in lockstep with rank 0, until rank 0 shuts down.
    False when this rank failed (it logged why, and told the launcher in one line)."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)  # its worker paces rank 0's as well
    control = _control(member)

    def lost(reason: str) -> None:
        log.error("%s: this rank ends", reason)
        _exit_now()

    control.start(on_lost=lost)
    cluster = ClusterSpec(
        member.rank,
        member.size,
        member.hosts,
        member.backend,
        joined=control.joined,
        resolve=lambda spec: model_directory(spec),
    )
    try:
        from mlxd.runtime.mlx.follower import follow as run_worker  # MLX loads here

        ok = run_worker(cluster)
    except Exception as exc:  # its worker could not start: as on rank 0, one line and a hint
        error = start_failure(exc)
        log.error("%s (%s)", error.message, error.hint)
        control.bye(1, error.message)
        return False
    control.bye(0 if ok else 1, "" if ok else "its MLX worker failed (see its log lines)")
    return ok
