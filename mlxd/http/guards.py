"""A small pure-ASGI layer in front of routing: the daemon's security guards.

In order: draining → Host allow-list (DNS rebinding) → Origin/CORS → API key →
content type → body size and receive deadline. Each refusal is a typed error that
``mlxd.http.errors`` answers in the envelope of the path's dialect; nothing here
reads ``X-Forwarded-*`` headers, and paths are taken from the raw ASGI scope.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlxd.errors import MlxdError, RequestError, UnavailableError
from mlxd.http.errors import (
    BodyTimeout,
    BodyTooLarge,
    HostNotAllowed,
    InvalidApiKey,
    OriginNotAllowed,
    UnsupportedMediaType,
    send_error,
)
from mlxd.http.state import DaemonState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_OPEN_PATHS = frozenset({"/health"})


def host_name(raw: str) -> str | None:
    """The host part of a Host header (``name``, ``name:port`` or ``[v6]:port``); None if malformed."""
    raw = raw.strip().lower()
    if not raw:
        return None
    if raw.startswith("["):
        end = raw.find("]")
        if end == -1:
            return None
        name, rest = raw[: end + 1], raw[end + 1 :]
    else:
        name, _, port = raw.partition(":")
        rest = ":" + port if port or raw.endswith(":") else ""
    if rest:
        port = rest[1:]
        if not rest.startswith(":") or not port.isdigit() or len(port) > 5:
            return None
    if not name or any(c in name for c in "/\\@?#% "):
        return None
    return name


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


def _key_matches(headers: dict[bytes, bytes], key: bytes) -> bool:
    """``Authorization: Bearer <key>``, or Anthropic's ``x-api-key: <key>`` (constant time)."""
    bearer = hmac.compare_digest(headers.get(b"authorization", b""), b"Bearer " + key)
    api_key = hmac.compare_digest(headers.get(b"x-api-key", b""), key)
    return bearer or api_key


class Guards:
    """Wraps the Litestar app; reads the live config on every request."""

    def __init__(self, app: ASGIApp, state: DaemonState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        server = self.state.configs.current.server
        headers: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.lower(), value)
        path: str = scope["path"]

        async def refuse(error: MlxdError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
            await send_error(send, error, path, extra or [])

        if self.state.draining and path not in _OPEN_PATHS:
            await refuse(UnavailableError("mlxd is shutting down", retry_after=5))
            return
        name = host_name(headers.get(b"host", b"").decode("latin-1"))
        allowed = LOOPBACK_NAMES | {h.lower() for h in server.allowed_hosts}
        if name is None or name not in allowed:
            await refuse(HostNotAllowed("Host header not allowed"))
            return
        origin = headers.get(b"origin", b"").decode("latin-1")
        cors: list[tuple[bytes, bytes]] = []
        if origin:
            origins = server.cors_allow_origins
            if origin not in origins and "*" not in origins:
                await refuse(OriginNotAllowed("Origin not allowed"))
                return
            cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
            if scope["method"] == "OPTIONS":
                await _respond(
                    send,
                    204,
                    b"",
                    [
                        *cors,
                        (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
                        (
                            b"access-control-allow-headers",
                            b"authorization, content-type, x-request-id, x-api-key, anthropic-version",
                        ),
                        (b"access-control-max-age", b"600"),
                    ],
                )
                return
        key = server.api_key.get_secret_value()
        if key and path not in _OPEN_PATHS and not _key_matches(headers, key.encode()):
            await refuse(InvalidApiKey("missing or wrong API key"), cors)
            return
        length_header = headers.get(b"content-length")
        if scope["method"] in ("POST", "PUT", "PATCH"):
            has_body = (length_header not in (None, b"0")) or b"transfer-encoding" in headers
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if has_body and ctype != b"application/json":
                await refuse(UnsupportedMediaType("the body must be application/json"), cors)
                return
        limit = server.max_request_bytes
        too_large = _too_large(limit)
        if length_header is not None:
            if not length_header.isdigit():
                await refuse(RequestError("invalid Content-Length", code="invalid_parameter"), cors)
                return
            if int(length_header) > limit:
                await refuse(too_large, cors)
                return
        receive = self._bounded(receive, limit, server.request_timeout)
        send = self._with_headers(send, cors) if cors else send
        try:
            await self.app(scope, receive, send)
        except BodyTooLarge:
            await refuse(too_large, cors)
        except BodyTimeout:
            await refuse(BodyTimeout("the request body did not arrive in time"), cors)

    @staticmethod
    def _bounded(receive: Receive, limit: int, timeout: float) -> Receive:
        """Count body bytes and give up on a body that stalls (slowloris)."""
        seen = 0
        body_done = False

        async def bounded() -> Message:
            nonlocal seen, body_done
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(timeout):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout("the request body did not arrive in time") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
                body_done = not message.get("more_body", False)
            return message

        return bounded

    @staticmethod
    def _with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        return sending


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(
        f"the body is larger than {limit} bytes",
        hint="[server] max_request_bytes sets the limit; an image sent inline counts a third more than its file",
    )
