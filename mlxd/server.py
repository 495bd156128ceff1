"""The HTTP server under the daemon: uvicorn, a header deadline, draining and signals.

The daemon decides when to stop (it drains first), so uvicorn's own signal handling is
off; the daemon installs its handlers with ``signal_handlers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mlxd.http.guards import ASGIApp


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
    """uvicorn without its own signal handling: the daemon drains first, then stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """uvicorn serving one ASGI app on one address until ``exit``."""

    def __init__(
        self, app: ASGIApp, *, host: str, port: int, request_timeout: float, drain_timeout: float
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
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None


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
