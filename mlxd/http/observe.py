"""The outermost ASGI layer: request ids, one access-log line per request, HTTP metrics (each
labelled with the API dialect its path belongs to)."""

from __future__ import annotations

import contextvars
import logging
import re
import time
from dataclasses import dataclass

from mlxd.http.dialects import dialect_for
from mlxd.http.guards import ASGIApp, Message, Receive, Scope, Send
from mlxd.http.ids import new_id
from mlxd.http.metrics import Metrics
from mlxd.logs import REQUEST_ID

log = logging.getLogger("mlxd.access")
#: A client's X-Request-Id is echoed only when it is short and plain (no log injection).
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


@dataclass(slots=True)
class _Outcome:
    """How the response being served ended, beyond its status (a holder, so a stream's
    own task can fill it in)."""

    #: The code of the error event that ended a stream after its 200.
    stream_error: str | None = None
    #: The last body message went out (a response cut short never sends it).
    complete: bool = False


_OUTCOME: contextvars.ContextVar[_Outcome | None] = contextvars.ContextVar("mlxd_outcome", default=None)


def note_stream_error(code: str | None) -> None:
    """Record that the response being served, a stream already under way, ended with an
    error event: its access line and ``/metrics`` say so next to the 200."""
    outcome = _OUTCOME.get()
    if outcome is not None:
        outcome.stream_error = code or "error"


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
        outcome = _Outcome()
        outcome_token = _OUTCOME.set(outcome)
        status = 500
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                outcome.complete = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            elapsed = time.perf_counter() - started
            dialect = dialect_for(scope["path"]).value
            self.metrics.observe(dialect, scope["path"], status, elapsed, outcome.stream_error)
            if outcome.stream_error is not None:
                ending = f" (stream ended with error {outcome.stream_error})"
            elif not outcome.complete and status < 499:
                ending = " (incomplete: the connection ended first)"
            else:
                ending = ""
            log.info("%s %s %d %.3fs %s%s", scope["method"], scope["path"], status, elapsed, dialect, ending)
            _OUTCOME.reset(outcome_token)
            REQUEST_ID.reset(token)
