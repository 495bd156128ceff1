"""The composition root: config store, runtime, HTTP app, watcher, uvicorn, signals.

SIGTERM/SIGINT drain (new requests get 503, in-flight ones finish up to
``drain_timeout``, then the server exits 0); SIGHUP reloads the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mlxd import supervision
from mlxd.config.schema import MlxdConfig
from mlxd.config.store import ConfigStore
from mlxd.config.watcher import watch_config
from mlxd.errors import ConfigError
from mlxd.http.app import create_app
from mlxd.http.guards import LOOPBACK_NAMES
from mlxd.http.state import DaemonState
from mlxd.http.translate import spec_for
from mlxd.hub import model_directory
from mlxd.runtime.scheduler import MlxEngine, RuntimeLimits

log = logging.getLogger("mlxd")


def physical_memory() -> int:
    """Bytes of RAM (macOS and Linux both answer sysconf)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 2**30


def runtime_limits(config: MlxdConfig) -> RuntimeLimits:
    """The engine's limits from ``[runtime]``, with the memory budget in bytes."""
    runtime = config.runtime
    return RuntimeLimits(
        max_loaded_models=runtime.max_loaded_models,
        memory_budget_bytes=runtime.memory_budget_bytes(physical_memory()),
        max_batch_size=runtime.max_batch_size,
        max_queue=runtime.max_queue,
        prefill_step_size=runtime.prefill_step_size,
        prompt_cache_bytes=runtime.prompt_cache_bytes,
    )


def header_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for a request's headers (slowloris).

    uvicorn waits forever for a connection that sends nothing or trickles its headers; the
    body has its own deadline in the guards. The deadline starts when a connection opens
    and when a kept-alive connection starts its next request, and ends once the headers
    are in; a connection that misses it is closed.
    """

    class DeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return DeadlineProtocol


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon drains first, then stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Daemon:
    """Runs the whole daemon in the current process until a signal stops it."""

    def __init__(self, store: ConfigStore, *, host: str | None = None, port: int | None = None) -> None:
        self.store = store
        server = store.current.server
        self.host = host or server.host
        self.port = port if port is not None else server.port
        if self.host not in LOOPBACK_NAMES and not server.api_key.get_secret_value():
            raise ConfigError(
                f"refusing to listen on {self.host} without an api_key: set [server] api_key "
                "(or MLXD_SERVER__API_KEY), or bind to 127.0.0.1"
            )
        self.engine = MlxEngine(
            runtime_limits(store.current), lambda spec: model_directory(spec, store.current)
        )
        self.state = DaemonState(store, self.engine, reload=self.reload)
        self._stop = asyncio.Event()
        self._server: _Server | None = None
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

    def _on_config(self, old: MlxdConfig, new: MlxdConfig, diff: Any) -> None:
        """Store subscriber (any thread): apply the new generation on the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply, new)

    def _apply(self, config: MlxdConfig) -> None:
        self.engine.set_limits(runtime_limits(config))
        self.engine.retire_unused({spec_for(m).key for m in config.models.values()})
        log.info("config generation %d applied", self.store.generation)

    async def _preload(self) -> None:
        config = self.store.current
        for alias, model in config.models.items():
            if model.preload:
                keep = model.keep_alive if model.keep_alive is not None else config.runtime.keep_alive
                try:
                    await self.engine.load(alias, spec_for(model), keep)
                except Exception as exc:
                    log.error("could not preload %s: %s", alias, exc)

    async def _drain_then_exit(self) -> None:
        if self.state.draining:
            return
        self.state.draining = True
        timeout = self.store.current.server.drain_timeout
        log.info("draining: finishing in-flight requests (up to %gs)", timeout)
        deadline = time.monotonic() + timeout
        while self.engine.status().active_sequences and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._server is not None:
            self._server.should_exit = True
        self._stop.set()

    async def serve(self, ready: asyncio.Event | None = None, *, signals: bool = True) -> None:
        """Start everything, serve until stopped, shut down cleanly.

        ``signals=False`` lets tests run the daemon on a thread (only the main thread
        may install signal handlers); they stop it with ``request_stop``.
        """
        self._loop = asyncio.get_running_loop()
        self.store.subscribe(self._on_config)
        await self.engine.start()
        config = uvicorn.Config(
            create_app(self.state),
            host=self.host,
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            # A loopback daemon trusts no X-Forwarded-* header (uvicorn would, from
            # 127.0.0.1, and it cost ~12% of the event loop per request).
            proxy_headers=False,
            timeout_graceful_shutdown=int(self.store.current.server.drain_timeout) + 1,
            timeout_keep_alive=30,
            http=header_deadline_protocol(self.store.current.server.request_timeout),
        )
        self._server = _Server(config)
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self.request_stop)
            self._loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        watcher = asyncio.create_task(watch_config(self.store, self._stop), name="mlxd-watcher")
        preload = asyncio.create_task(self._preload(), name="mlxd-preload")
        serving = asyncio.create_task(self._server.serve(), name="mlxd-uvicorn")
        while not self._server.started and not serving.done():
            await asyncio.sleep(0.01)
        if signals and self._server.started:  # the process's own daemon (not a test's thread)
            supervision.write_run_record(self.host, self.bound_port or self.port, self.store.path)
        if ready is not None:
            ready.set()
        try:
            await serving
        finally:
            self._stop.set()
            for task in (watcher, preload):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.engine.stop()
            if signals:
                supervision.remove_run_record(only_pid=os.getpid())
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    self._loop.remove_signal_handler(sig)
            log.info("stopped")

    def request_stop(self) -> None:
        """Drain and stop (thread-safe; what SIGTERM does)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(lambda: self._spawn(self._drain_then_exit()))

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
        if self._server is None or not self._server.servers:
            return None
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None


def run(
    config_path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    host: str | None = None,
    port: int | None = None,
) -> None:
    """``mlxd serve``: build the daemon from a config file and serve in the foreground."""
    store = ConfigStore(config_path, overrides)
    daemon = Daemon(store, host=host, port=port)
    asyncio.run(daemon.serve())
