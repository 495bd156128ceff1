"""The HTTP server under the daemon: uvicorn, a header deadline, a connection cap,
draining and signals, and the optional second listener (``[server] ollama_port``) for the
same app.

The daemon decides when to stop (it drains first), so uvicorn's own signal handling is
off; the daemon installs its handlers with ``signal_handlers``. How long each phase of a
stop may take comes from ``mlxd.supervision.stopping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlxd.errors import UnavailableError
from mlxd.http.errors import send_error
from mlxd.http.guards import ASGIApp, Receive, Scope, Send
from mlxd.supervision.stopping import CLOSE_GRACE_S

log = logging.getLogger("mlxd")

#: File descriptors the daemon needs besides its connections (weights, logs, pipes, threads).
FD_RESERVE = 256
#: Seconds a connection beyond the cap has to send its request before it is closed.
SURPLUS_DEADLINE_S = 1.0


class ConnectionCap:
    """Open connections, and how many may be open at once (``[server] max_connections``).

    A connection beyond the cap is answered with one 503 (``Retry-After``) and closed,
    without reaching the app: a flood of connections costs a socket each for a moment,
    never the file descriptors, the event loop or the log of the connections within it.
    """

    def __init__(self, wanted: int) -> None:
        #: ``max_connections`` as configured.
        self.wanted = wanted
        #: The cap in force: ``wanted``, unless the open-file limit holds fewer.
        self.limit = wanted
        self.open = 0

    def fit(self, wanted: int | None = None) -> None:
        """Apply ``wanted`` (or the current wish) against the open-file limit, raising it to
        fit. Called at start, on a config edit, and after the MLX worker's imports (mlx-lm
        sets the limit when it is imported)."""
        if wanted is not None:
            self.wanted = wanted
        self.limit = fit_file_limit(self.wanted)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app a surplus connection gets instead of the daemon's: 503, then close."""
        # One line for the whole flood: identical lines are summed up by the log's limiter.
        log.warning("refusing connections beyond max_connections = %d", self.limit)
        error = UnavailableError(
            f"too many open connections (max_connections = {self.limit}); try again shortly", retry_after=1
        )
        await send_error(send, error, scope["path"], [(b"connection", b"close")])


def guarded_protocol(seconds: float, cap: ConnectionCap) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with a deadline for a request's headers (slowloris) and
    a cap on open connections (floods).

    uvicorn waits forever for a connection that sends nothing or trickles its headers; the
    body has its own deadline in the guards. The deadline starts when a connection opens
    and when a kept-alive connection starts its next request, and ends once the headers
    are in; a connection that misses it is closed. A connection beyond ``cap`` gets
    ``cap.refuse`` as its app and ``SURPLUS_DEADLINE_S`` for its request. (uvicorn's own
    ``limit_concurrency`` counts every open connection at each request, so under a flood
    it would refuse the connections already being served too.)

    httptools (llhttp, the parser in C that Node.js uses) rather than h11: pure-Python h11
    was a quarter of the event loop's time per request, and the event loop is where a burst
    of requests waits to be admitted (``python -m bench.admission``).
    """

    class GuardedProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _seconds = seconds
        _counted = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            cap.open += 1
            self._counted = True
            if cap.open > cap.limit:
                self.app = cap.refuse
                self._seconds = min(seconds, SURPLUS_DEADLINE_S)
            self._arm()

        def on_message_begin(self) -> None:
            self._arm()  # a kept-alive connection's next request: its headers are due
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._counted:
                self._counted = False
                cap.open -= 1
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(self._seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None  # armed until the headers were in: they are not
            if self.cycle is not None and not self.cycle.response_complete:
                # A response is still going out (a stream): the next request's first bytes came
                # early and the rest cannot be read until it ends, so its deadline starts again.
                self._arm()
            elif not self.transport.is_closing():
                self.transport.close()

    return GuardedProtocol


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling (the daemon drains first, then stops it), and
    with more listening addresses for the same app if asked.

    Extra listeners share everything with the main one: the app and its guards, the
    connection bookkeeping, graceful shutdown. Only the socket differs.
    """

    extra: tuple[tuple[str, int], ...] = ()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        loop = asyncio.get_running_loop()
        config = self.config

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=loop
            )

        for host, port in self.extra:
            try:
                server = await loop.create_server(protocol, host=host, port=port, backlog=config.backlog)
            except OSError as exc:
                log.error("could not listen on %s:%d as well: %s", host, port, exc)
                for started in self.servers:
                    started.close()
                sys.exit(1)  # as uvicorn itself does when the main address is taken
            self.servers.append(server)
            log.info("also listening on http://%s:%d", host, port)


def fit_file_limit(connections: int) -> int:
    """Raise the soft open-file limit (``RLIMIT_NOFILE``) so ``connections`` sockets fit
    beside the daemon's own files; returns how many connections do fit.

    A process out of file descriptors cannot even accept the connection that would ask
    ``/health``. macOS starts programs at 256 (launchd's plist asks for more); the hard
    limit is the ceiling an unprivileged process may raise it to.
    """
    if sys.platform == "win32":
        return connections
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, raised, exc)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return connections
    fits = max(1, soft - FD_RESERVE)
    log.warning(
        "the open-file limit is %d: serving at most %d connections at once (max_connections = %d)",
        soft,
        fits,
        connections,
    )
    return fits


class HttpServer:
    """uvicorn serving one ASGI app on one address until ``exit``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        request_timeout: float,
        connections: ConnectionCap,
        extra: tuple[tuple[str, int], ...] = (),
    ) -> None:
        #: Open connections and their cap (one cap for every listener of a daemon).
        self.connections = connections
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            # A loopback daemon trusts no X-Forwarded-* header (uvicorn would, from
            # 127.0.0.1, and it cost ~12% of the event loop per request).
            proxy_headers=False,
            # The daemon drains before it stops the server, and every response has ended by
            # then: this is only for connections still closing (see supervision.stopping).
            timeout_graceful_shutdown=CLOSE_GRACE_S,
            timeout_keep_alive=30,
            http=guarded_protocol(request_timeout, self.connections),
            # No WebSocket route exists; an upgrade would hand the connection to another protocol
            # object, whose end the connection cap would never hear of.
            ws="none",
        )
        self._server = _Uvicorn(config)
        self._server.extra = extra

    async def serve(self, ready: asyncio.Event | None = None) -> None:
        """Serve until ``exit``; ``ready`` is set once the socket listens (or serving failed)."""
        serving = asyncio.create_task(self._server.serve(), name="mlxd-uvicorn")
        if ready is not None:
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            ready.set()
        await serving

    def exit(self, *, now: bool = False) -> None:
        """Stop accepting and finish: open connections get ``CLOSE_GRACE_S`` to close, or
        no time at all ``now``."""
        self._server.should_exit = True
        if now:
            self._server.force_exit = True

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (useful with port 0)."""
        ports = self.bound_ports
        return ports[0] if ports else None

    @property
    def bound_ports(self) -> list[int]:
        """Every port listened on: the main one first, then the extra ones."""
        return [int(sock.getsockname()[1]) for server in self._server.servers for sock in server.sockets]


async def drain(in_flight: Callable[[], int], timeout: float, now: asyncio.Event | None = None) -> None:
    """Wait until nothing is in flight, ``timeout`` seconds have passed, or ``now`` is set."""
    deadline = time.monotonic() + timeout
    while in_flight() and time.monotonic() < deadline and not (now is not None and now.is_set()):
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def signal_handlers(
    loop: asyncio.AbstractEventLoop,
    on_stop: Callable[[], None],
    on_reload: Callable[[], None],
    on_interrupt: Callable[[], None] | None = None,
) -> Iterator[None]:
    """SIGTERM calls ``on_stop``, SIGINT ``on_interrupt`` (else ``on_stop``), SIGHUP
    ``on_reload``, while the block runs (main thread only)."""
    loop.add_signal_handler(signal.SIGTERM, on_stop)
    loop.add_signal_handler(signal.SIGINT, on_interrupt or on_stop)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
