"""The one table mapping errors to an HTTP status and OpenAI's error envelope."""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)

from mlxd.errors import (
    CapacityError,
    ConfigError,
    ContextLengthError,
    MlxdError,
    ModelLoadError,
    ModelNotFoundError,
    RequestError,
    UnavailableError,
)
from mlxd.protocol.responses import ErrorBody, ErrorEnvelope

log = logging.getLogger("mlxd.http")


class BodyTooLarge(Exception):
    """The body grew past ``max_request_bytes`` while it was read."""


class BodyTimeout(Exception):
    """The body did not arrive within ``request_timeout`` (slowloris)."""


#: error class -> (status, OpenAI type). The first match wins, so subclasses come first.
ERROR_TABLE: list[tuple[type[MlxdError], int, str]] = [
    (ContextLengthError, 400, "invalid_request_error"),
    (RequestError, 400, "invalid_request_error"),
    (ConfigError, 400, "invalid_request_error"),
    (ModelNotFoundError, 404, "invalid_request_error"),
    (CapacityError, 429, "rate_limit_error"),
    (UnavailableError, 503, "server_error"),
    (ModelLoadError, 503, "server_error"),
    (MlxdError, 500, "server_error"),
]


def envelope(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    """Encode OpenAI's error envelope."""
    return msgspec.json.encode(ErrorEnvelope(ErrorBody(message=message, type=type_, param=param, code=code)))


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    """A JSON error response in OpenAI's envelope."""
    return Response(
        envelope(message, type_, code, param),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def mlxd_error_response(exc: MlxdError) -> Response[bytes]:
    """Map one of our errors through the table."""
    status, type_ = next((s, t) for kind, s, t in ERROR_TABLE if isinstance(exc, kind))
    headers = {}
    if isinstance(exc, CapacityError | UnavailableError):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, ModelLoadError):
        headers["Retry-After"] = "5"
    param = exc.param if isinstance(exc, RequestError) else None
    if isinstance(exc, ModelNotFoundError):
        param = "model"
    message = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
    return error_response(status, message, type_, exc.code, param, headers)


def _validation_response(exc: ValidationException) -> Response[bytes]:
    """Litestar's body decoding errors (msgspec) become 400 invalid_parameter naming the field."""
    message = "the request body is invalid"
    param: str | None = None
    extra: Any = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        detail = extra[0]
        message = str(detail.get("message") or message)
        key = detail.get("key")
        param = str(key) if key else None
    elif exc.detail:
        message = exc.detail
    missing = re.search(r"missing required field `([^`]+)`", message)
    if missing:
        param = missing.group(1)
    elif "$." in message:
        param = param or message.rsplit("$.", 1)[-1].split("[")[0].split("`")[0] or None
    return error_response(400, message, "invalid_request_error", "invalid_parameter", param)


def exception_handler(_: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Litestar's handler for every exception: nothing leaves without the envelope."""
    if isinstance(exc, MlxdError):
        return mlxd_error_response(exc)
    if isinstance(exc, ValidationException):
        return _validation_response(exc)
    if isinstance(exc, BodyTooLarge):
        return error_response(413, "the body is too large", "invalid_request_error", "request_too_large")
    if isinstance(exc, BodyTimeout):
        return error_response(
            408, "the request body did not arrive in time", "invalid_request_error", "request_timeout"
        )
    if isinstance(exc, UnicodeDecodeError | msgspec.DecodeError):
        return error_response(
            400, "the body is not valid UTF-8 JSON", "invalid_request_error", "invalid_parameter"
        )
    if isinstance(exc, NotFoundException):
        return error_response(404, "no such route", "invalid_request_error", "not_found")
    if isinstance(exc, MethodNotAllowedException):
        return error_response(405, "method not allowed", "invalid_request_error", "method_not_allowed")
    if isinstance(exc, HTTPException):
        code = "invalid_parameter" if exc.status_code == 400 else None
        return error_response(exc.status_code, exc.detail, "invalid_request_error", code)
    log.exception("unhandled error")
    return error_response(500, "internal error; the daemon keeps serving", "server_error", "internal_error")
