"""The HTTP server under the daemon: uvicorn, a header deadline, draining and signals, and
the optional second listener (``[server] ollama_port``) for the same app.

The daemon decides when to stop (it drains first), so uvicorn's own signal handling is
off; the daemon installs its handlers with ``signal_handlers``.
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

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mlxd.http.guards import ASGIApp

log = logging.getLogger("mlxd")


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


class HttpServer:
    """uvicorn serving one ASGI app on one address until ``exit``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str,
        port: int,
        request_timeout: float,
        drain_timeout: float,
        extra: tuple[tuple[str, int], ...] = (),
    ) -> None:
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
            timeout_graceful_shutdown=int(drain_timeout) + 1,
            timeout_keep_alive=30,
            http=header_deadline_protocol(request_timeout),
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

    def exit(self) -> None:
        """Stop accepting and finish (uvicorn gives open connections its graceful timeout)."""
        self._server.should_exit = True

    @property
    def bound_port(self) -> int | None:
        """The port actually bound (useful with port 0)."""
        ports = self.bound_ports
        return ports[0] if ports else None

    @property
    def bound_ports(self) -> list[int]:
        """Every port listened on: the main one first, then the extra ones."""
        return [int(sock.getsockname()[1]) for server in self._server.servers for sock in server.sockets]


async def drain(in_flight: Callable[[], int], timeout: float) -> None:
    """Wait until nothing is in flight, or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while in_flight() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def signal_handlers(
    loop: asyncio.AbstractEventLoop, on_stop: Callable[[], None], on_reload: Callable[[], None]
) -> Iterator[None]:
    """SIGTERM and SIGINT call ``on_stop``, SIGHUP ``on_reload``, while the block runs (main thread only)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
