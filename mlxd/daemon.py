"""The composition root: it wires the config store, the engine, the app, the watcher and
the server, and applies each config generation to the engine. It builds nothing else.

SIGTERM or Ctrl-C drains: new requests get 503, requests in flight run on for up to
``drain_timeout``; then every sequence still running ends with an error event (503
``unavailable`` for a request not streaming yet), the server closes and the process
exits 0, within the bounds of ``mlxd.supervision.stopping``. A second Ctrl-C ends the
sequences at once. SIGHUP reloads the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from typing import Any

from mlxd import supervision
from mlxd.config.diff import ConfigDiff
from mlxd.config.schema import MlxdConfig
from mlxd.config.store import ConfigStore
from mlxd.config.watcher import watch_config
from mlxd.errors import UnavailableError
from mlxd.http.app import create_app
from mlxd.http.state import DaemonState
from mlxd.hub import model_directory
from mlxd.runtime.engine import Engine
from mlxd.runtime.from_config import keep_alive_for, runtime_settings, spec_for, units_of
from mlxd.runtime.mlx_engine import MlxEngine
from mlxd.server import ConnectionCap, HttpServer, drain, signal_handlers
from mlxd.supervision.stopping import WORKER_STOP_S

log = logging.getLogger("mlxd")


def mlx_engine(store: ConfigStore, connections: ConnectionCap | None = None) -> MlxEngine:
    """The engine ``mlxd serve`` runs: MLX on one worker thread, models from the config's paths
    (validated and confined by the hub; a missing download names the alias to pull). Once
    its thread has imported mlx-lm, which resets the open-file limit, ``connections`` fits
    the limit again."""
    return MlxEngine(
        runtime_settings(store.current),
        lambda spec: model_directory(spec, store.current),
        worker_stop_s=WORKER_STOP_S,
        on_worker_start=connections.fit if connections is not None else None,
    )


def shutting_down() -> UnavailableError:
    """What a request gets when the daemon stops under it: retry in a moment (a restart)."""
    return UnavailableError("mlxd is shutting down", retry_after=5)


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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background task, keeping a reference so it is not collected mid-flight."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> int:
        """Re-read the config file (the same path SIGHUP and the watcher take)."""
        await asyncio.to_thread(self.store.reload)
        return self.store.generation

    def _on_config(self, old: MlxdConfig, new: MlxdConfig, diff: ConfigDiff) -> None:
        """Store subscriber (any thread): apply the new generation on the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply, new)

    def _apply(self, config: MlxdConfig) -> None:
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
                    log.error("could not preload %s: %s", alias, exc)

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
                unsubscribe()
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


def run(store: ConfigStore) -> None:
    """``mlxd serve``: serve the store's config in the foreground until a signal stops it."""
    connections = ConnectionCap(store.current.server.max_connections)
    asyncio.run(Daemon(store, mlx_engine(store, connections), connections).serve())
