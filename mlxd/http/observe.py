"""The outermost ASGI layer: request ids, one access-log line per request, HTTP metrics (each
labelled with the API dialect its path belongs to)."""

from __future__ import annotations

import logging
import re
import time

from mlxd.http.dialects import dialect_for
from mlxd.http.guards import ASGIApp, Message, Receive, Scope, Send
from mlxd.http.ids import new_id
from mlxd.http.metrics import Metrics
from mlxd.logs import REQUEST_ID

log = logging.getLogger("mlxd.access")
#: A client's X-Request-Id is echoed only when it is short and plain (no log injection).
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


class Observe:
    """Assigns (or accepts) ``X-Request-Id``, echoes it, logs and counts the request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k.lower() == b"x-request-id"), b"").decode("latin-1")
        request_id = given if _CLIENT_ID.fullmatch(given) else new_id()
        token = REQUEST_ID.set(request_id)
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            dialect = dialect_for(scope["path"]).value
            self.metrics.observe(dialect, scope["path"], status, elapsed)
            log.info("%s %s %d %.3fs %s", scope["method"], scope["path"], status, elapsed, dialect)
            REQUEST_ID.reset(token)
