"""The one map from exceptions to HTTP errors, and each dialect's error envelope.

    exception ──typed()──▶ MlxdError ──ERRORS──▶ HttpError(status, code, message, param, headers)
                                                     │
                          dialect_for(path) ─────────┼─▶ OpenAI     {"error": {message, type, param, code}}
                                                     ├─▶ Anthropic  {"type": "error", "error": {type, message}}
                                                     └─▶ Ollama     {"error": message}

Every refusal takes this path: Litestar's exception handler, the ASGI guards, the admin
reload route and the error event of a stream that already started. Foreign exceptions
(Litestar's, msgspec's) become typed ones first, so one table decides every status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
    DaemonNotRunningError,
    GenerationError,
    HubError,
    MlxdError,
    ModelCorruptError,
    ModelDirNotFoundError,
    ModelLoadError,
    ModelNotDownloadedError,
    ModelNotFoundError,
    ModelUnsupportedError,
    RankFailedError,
    RequestError,
    ServiceManagerError,
    StartupError,
    UnavailableError,
    error_for_code,
)
from mlxd.http.dialects import Dialect, dialect_for

log = logging.getLogger("mlxd.http")


# --- errors of the HTTP layer itself ---------------------------------------------------


class HostNotAllowed(MlxdError):
    """The Host header names no allowed host (DNS rebinding)."""

    code = "host_not_allowed"


class OriginNotAllowed(MlxdError):
    """A browser Origin that is not in ``cors_allow_origins``."""

    code = "origin_not_allowed"


class InvalidApiKey(MlxdError):
    """The API key is missing or wrong."""

    code = "invalid_api_key"


class UnsupportedMediaType(MlxdError):
    """A body that is not ``application/json``."""

    code = "unsupported_media_type"


class BodyTooLarge(MlxdError):
    """The body is (or grew) larger than ``max_request_bytes``."""

    code = "request_too_large"


class BodyTimeout(MlxdError):
    """The body did not arrive within ``request_timeout`` (slowloris)."""

    code = "request_timeout"


class RouteNotFound(MlxdError):
    """No route has this path."""

    code = "not_found"


class MethodNotAllowed(MlxdError):
    """The route exists, the method does not."""

    code = "method_not_allowed"


class Refused(MlxdError):
    """A route that exists in a dialect but that mlxd refuses on purpose (a request never
    downloads, creates or deletes a model)."""

    code = "not_allowed"


class UnknownId(MlxdError):
    """An id that names nothing stored (a forgotten or deleted response)."""

    code = "not_found"


class NotAvailable(MlxdError):
    """A route of a dialect that mlxd does not serve yet."""

    code = "not_implemented"


#: The code of a framework refusal that only has a status.
_STATUS_CODES = {400: "invalid_parameter", 413: "request_too_large", 415: "unsupported_media_type"}


class HttpStatusError(MlxdError):
    """Any other refusal the web framework raised, with its own status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, code=_STATUS_CODES.get(status, "internal_error" if status >= 500 else None))
        self.status = status


# --- the one table ---------------------------------------------------------------------


class Rule(NamedTuple):
    """How one kind of error is answered: its status, and the field it is about."""

    status: int
    param: str | None = None


#: Error class -> rule. The most specific class in an exception's MRO wins, so a new
#: subclass inherits its parent's row until it gets one of its own (one line).
ERRORS: dict[type[MlxdError], Rule] = {
    MlxdError: Rule(500),
    ConfigError: Rule(400),
    RequestError: Rule(400),
    ModelNotFoundError: Rule(404, param="model"),
    CapacityError: Rule(429),
    UnavailableError: Rule(503),
    ModelLoadError: Rule(503),
    # What only a person can fix: statuses OpenAI-style clients do not retry.
    ModelNotDownloadedError: Rule(404, param="model"),
    ModelDirNotFoundError: Rule(404, param="model"),
    ModelCorruptError: Rule(422, param="model"),
    ModelUnsupportedError: Rule(422, param="model"),
    GenerationError: Rule(500),
    StartupError: Rule(500),
    RankFailedError: Rule(500),
    DaemonNotRunningError: Rule(500),
    ServiceManagerError: Rule(500),
    HubError: Rule(500),
    HostNotAllowed: Rule(403),
    OriginNotAllowed: Rule(403),
    InvalidApiKey: Rule(401),
    UnsupportedMediaType: Rule(415),
    BodyTooLarge: Rule(413),
    BodyTimeout: Rule(408),
    RouteNotFound: Rule(404),
    MethodNotAllowed: Rule(405),
    Refused: Rule(403),
    UnknownId: Rule(404),
    NotAvailable: Rule(501),
}

#: Seconds a client should wait before retrying a 429 or 503 that does not say.
DEFAULT_RETRY_AFTER = 5


@dataclass(frozen=True, slots=True)
class HttpError:
    """An error as HTTP sends it, before a dialect wraps it."""

    status: int
    code: str | None
    message: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Extra members of OpenAI's error object (``problems`` of a rejected config).
    extra: dict[str, Any] = field(default_factory=dict)


def _rule(exc: MlxdError) -> Rule:
    for kind in type(exc).__mro__:
        rule = ERRORS.get(kind)
        if rule is not None:
            return rule
    return ERRORS[MlxdError]


def typed(exc: BaseException) -> MlxdError:
    """Our error for any exception a request can raise (unknown ones are internal errors)."""
    if isinstance(exc, MlxdError):
        return exc
    if isinstance(exc, NotFoundException):
        return RouteNotFound("no such route")
    if isinstance(exc, MethodNotAllowedException):
        return MethodNotAllowed("method not allowed")
    if isinstance(exc, ValidationException):
        return _validation_error(exc)
    if isinstance(exc, UnicodeDecodeError | msgspec.DecodeError):
        return RequestError("the body is not valid UTF-8 JSON", code="invalid_body")
    if isinstance(exc, HTTPException):
        return HttpStatusError(exc.detail or "the request was refused", exc.status_code)
    log.error("unhandled error", exc_info=exc)
    return MlxdError("internal error; the daemon keeps serving")


def _validation_error(exc: ValidationException) -> RequestError:
    """Litestar's own parameter checks (path and query parameters; bodies are decoded by us)."""
    extra: Any = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        detail = extra[0]
        key = detail.get("key")
        if key == "data" and detail.get("source") == "body":
            return RequestError("the request body is empty", code="invalid_body")
        message = str(detail.get("message") or "the request is invalid")
        return RequestError(f"{key}: {message}" if key else message, param=str(key) if key else None)
    return RequestError(exc.detail or "the request is invalid")


def http_error(exc: BaseException) -> HttpError:
    """Status, code, message, field and headers of any exception."""
    error = typed(exc)
    rule = _rule(error)
    status = error.status if isinstance(error, HttpStatusError) else rule.status
    headers: dict[str, str] = {}
    if status in (429, 503):
        headers["Retry-After"] = str(getattr(error, "retry_after", DEFAULT_RETRY_AFTER))
    param = getattr(error, "param", None) or rule.param
    message = f"{error.message} ({error.hint})" if error.hint else error.message
    extra: dict[str, Any] = {}
    if isinstance(error, ConfigError):
        extra["problems"] = error.problems
    return HttpError(status, error.code, message, param, headers, extra)


# --- the envelopes -----------------------------------------------------------------------


def openai_type(status: int) -> str:
    """OpenAI's error ``type`` for a status."""
    if status >= 500:
        return "server_error"
    return {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error"
    )


def anthropic_type(status: int) -> str:
    """Anthropic's error ``type`` for a status."""
    return {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        503: "overloaded_error",
        529: "overloaded_error",
    }.get(status, "api_error" if status >= 500 else "invalid_request_error")


#: Ollama answers a full queue with 503 "server busy" rather than 429.
_OLLAMA_STATUS = {429: 503}


def envelope(error: HttpError, dialect: Dialect) -> tuple[int, bytes]:
    """The status and JSON body of an error in a dialect's own envelope."""
    if dialect is Dialect.ANTHROPIC:
        body: Any = {
            "type": "error",
            "error": {"type": anthropic_type(error.status), "message": error.message},
        }
        return error.status, msgspec.json.encode(body)
    if dialect is Dialect.OLLAMA:
        return _OLLAMA_STATUS.get(error.status, error.status), msgspec.json.encode({"error": error.message})
    inner = {
        "message": error.message,
        "type": openai_type(error.status),
        "param": error.param,
        "code": error.code,
        **error.extra,
    }
    return error.status, msgspec.json.encode({"error": inner})


def stream_failure(message: str | None, code: str | None) -> MlxdError:
    """The error a choice that failed after its stream started ended with (its ``Finish``
    carries the message and the code)."""
    text = message or "generation failed"
    return error_for_code(code, text) if code else GenerationError(text)


def error_document(exc: BaseException, dialect: Dialect) -> bytes:
    """The JSON body alone, for an error event inside a stream that already started."""
    return envelope(http_error(exc), dialect)[1]


def error_response(exc: BaseException, path: str) -> Response[bytes]:
    """A Litestar response for an exception raised while serving ``path``."""
    error = http_error(exc)
    status, body = envelope(error, dialect_for(path))
    return Response(body, status_code=status, media_type="application/json", headers=error.headers)


def exception_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Litestar's handler for every exception: nothing leaves without its dialect's envelope."""
    return error_response(exc, request.scope["path"])


async def send_error(send: Any, exc: BaseException, path: str, headers: list[tuple[bytes, bytes]]) -> None:
    """Answer an ASGI request with an error, from outside Litestar (the guards)."""
    error = http_error(exc)
    status, body = envelope(error, dialect_for(path))
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
