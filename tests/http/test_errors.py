"""The one error map: every error class has its status, and each dialect gets its own envelope.

The table is checked class by class against the contract; the envelopes are checked on the
real server, where refusals that happen before routing (the guards) must already speak the
dialect of the path they refuse.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlxd
from mlxd.errors import (
    CapacityError,
    ConfigError,
    ContextLengthError,
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
)
from mlxd.http.dialects import Dialect, dialect_for
from mlxd.http.errors import (
    BodyTimeout,
    BodyTooLarge,
    HostNotAllowed,
    HttpStatusError,
    InvalidApiKey,
    MethodNotAllowed,
    NotAvailable,
    OriginNotAllowed,
    Refused,
    RouteNotFound,
    UnknownId,
    UnsupportedMediaType,
    envelope,
    http_error,
)
from tests.conftest import RunningDaemon, serving

#: What the contract (and, for the HTTP layer's own errors, the guards' section) demands.
#: Subclasses not listed take their nearest listed ancestor's status; a new direct subclass
#: of MlxdError must be listed here and get a row in mlxd.http.errors.ERRORS.
EXPECTED: dict[type[MlxdError], int] = {
    MlxdError: 500,
    ConfigError: 400,
    RequestError: 400,
    ContextLengthError: 400,
    ModelNotFoundError: 404,
    CapacityError: 429,
    UnavailableError: 503,
    ModelLoadError: 503,
    ModelNotDownloadedError: 404,
    ModelDirNotFoundError: 404,
    ModelCorruptError: 422,
    ModelUnsupportedError: 422,
    GenerationError: 500,
    StartupError: 500,
    RankFailedError: 500,
    DaemonNotRunningError: 500,
    ServiceManagerError: 500,
    HubError: 500,
    HostNotAllowed: 403,
    OriginNotAllowed: 403,
    InvalidApiKey: 401,
    UnsupportedMediaType: 415,
    BodyTooLarge: 413,
    BodyTimeout: 408,
    RouteNotFound: 404,
    MethodNotAllowed: 405,
    Refused: 403,
    UnknownId: 404,
    NotAvailable: 501,
    HttpStatusError: 500,
}


def _every_subclass() -> list[type[MlxdError]]:
    """Every MlxdError subclass the daemon can raise: all of mlxd but the CLI, whose own
    errors never reach HTTP (they map to exit codes in its own table)."""
    for module in pkgutil.walk_packages(mlxd.__path__, "mlxd."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found: list[type[MlxdError]] = []
    todo = [MlxdError]
    while todo:
        kind = todo.pop()
        if not kind.__module__.startswith("mlxd.cli."):
            found.append(kind)
        todo.extend(kind.__subclasses__())
    return found


def _instance(kind: type[MlxdError]) -> MlxdError:
    return HttpStatusError("refused", 500) if kind is HttpStatusError else kind("message")


def _expected(kind: type[MlxdError]) -> int:
    for ancestor in kind.__mro__:
        if ancestor in EXPECTED:
            return EXPECTED[ancestor]  # type: ignore[index]
    raise AssertionError(kind)


def test_every_error_class_has_its_status() -> None:
    kinds = _every_subclass()
    assert len(kinds) >= len(EXPECTED)
    for kind in kinds:
        direct = MlxdError in kind.__bases__
        assert not direct or kind in EXPECTED, f"{kind.__name__}: decide its status here and in ERRORS"
        assert http_error(_instance(kind)).status == _expected(kind), kind.__name__


def test_retry_after_and_the_field_named() -> None:
    assert http_error(CapacityError("full", retry_after=3)).headers == {"Retry-After": "3"}
    assert http_error(ModelLoadError("broken")).headers == {"Retry-After": "5"}
    assert http_error(ModelNotFoundError("nope")).param == "model"
    assert http_error(RequestError("bad", param="top_p")).param == "top_p"
    error = http_error(ConfigError("bad config", problems=["a: wrong", "b: missing"]))
    assert error.extra == {"problems": ["a: wrong", "b: missing"]}


def test_an_unknown_exception_is_an_internal_error_without_details() -> None:
    error = http_error(KeyError("/secret/path"))
    assert (error.status, error.code) == (500, "internal_error")
    assert "secret" not in error.message


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/v1/chat/completions", Dialect.OPENAI),
        ("/v1/messages", Dialect.ANTHROPIC),
        ("/v1/messages/count_tokens", Dialect.ANTHROPIC),
        ("/v1/messagesx", Dialect.OPENAI),
        ("/api/chat", Dialect.OLLAMA),
        ("/api", Dialect.OLLAMA),
        ("/apix", Dialect.OPENAI),
        ("/health", Dialect.OPENAI),
    ],
)
def test_the_path_picks_the_dialect(path: str, dialect: Dialect) -> None:
    assert dialect_for(path) is dialect


def test_each_dialect_wraps_the_same_error_its_way() -> None:
    import json

    error = http_error(ModelNotFoundError("the model 'x' does not exist"))
    status, body = envelope(error, Dialect.OPENAI)
    assert (status, json.loads(body)) == (
        404,
        {
            "error": {
                "message": "the model 'x' does not exist",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        },
    )
    status, body = envelope(error, Dialect.ANTHROPIC)
    assert (status, json.loads(body)) == (
        404,
        {"type": "error", "error": {"type": "not_found_error", "message": "the model 'x' does not exist"}},
    )
    status, body = envelope(error, Dialect.OLLAMA)
    assert (status, json.loads(body)) == (404, {"error": "the model 'x' does not exist"})
    # Ollama answers a full queue "server busy" with 503.
    assert envelope(http_error(CapacityError("full")), Dialect.OLLAMA)[0] == 503
    assert json.loads(envelope(http_error(CapacityError("full")), Dialect.ANTHROPIC)[1])["error"]["type"] == (
        "rate_limit_error"
    )


# --- the envelopes on the real server ------------------------------------------------------

KEY = "k-123"


@pytest.fixture(scope="module")
def keyed(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with serving(
        tmp_path_factory.mktemp("keyed"),
        f"""
[server]
port = 0
api_key = "{KEY}"
max_request_bytes = 2048
[runtime]
keep_alive = "forever"
[models.tiny]
model = "{tiny_model_dir}"
""",
    ) as running:
        yield running


def _shape(response: httpx.Response, dialect: Dialect) -> dict[str, Any]:
    body = response.json()
    if dialect is Dialect.ANTHROPIC:
        assert body["type"] == "error"
        assert set(body["error"]) == {"type", "message"}
        return {"type": body["error"]["type"], "message": body["error"]["message"]}
    if dialect is Dialect.OLLAMA:
        assert set(body) == {"error"}
        assert isinstance(body["error"], str)
        return {"message": body["error"]}
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return dict(body["error"])


REFUSALS = [
    ("no key", {}, b'{"x": 1}', "application/json", 401, "authentication_error"),
    (
        "bad host",
        {"host": "evil.example", "x-api-key": KEY},
        b"{}",
        "application/json",
        403,
        "permission_error",
    ),
    ("bad origin", {"origin": "http://evil.example", "x-api-key": KEY}, b"{}", "application/json", 403, None),
    ("text/plain", {"x-api-key": KEY}, b"{}", "text/plain", 415, "invalid_request_error"),
    ("too large", {"x-api-key": KEY}, b'{"a": "' + b"x" * 4000 + b'"}', "application/json", 413, None),
]


@pytest.mark.mlx
@pytest.mark.server
@pytest.mark.parametrize(
    ("label", "headers", "body", "ctype", "status", "anthropic_type"), REFUSALS, ids=[r[0] for r in REFUSALS]
)
@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/v1/chat/completions", Dialect.OPENAI),
        ("/v1/messages", Dialect.ANTHROPIC),
        ("/api/chat", Dialect.OLLAMA),
    ],
)
def test_guard_refusals_speak_the_dialect_of_the_path(
    keyed: RunningDaemon,
    path: str,
    dialect: Dialect,
    label: str,
    headers: dict[str, str],
    body: bytes,
    ctype: str,
    status: int,
    anthropic_type: str | None,
) -> None:
    with keyed.client() as http:
        response = http.post(path, content=body, headers={"content-type": ctype, **headers})
        assert response.status_code == status, response.text
        error = _shape(response, dialect)
        assert error["message"]
        assert KEY not in response.text
        if dialect is Dialect.ANTHROPIC and anthropic_type:
            assert error["type"] == anthropic_type
        # The daemon still serves, with either way of giving the key.
        assert http.get("/health").status_code == 200
        good = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=good, headers={"x-api-key": KEY}).status_code == 200
        assert (
            http.post(
                "/v1/chat/completions", json=good, headers={"authorization": f"Bearer {KEY}"}
            ).status_code
            == 200
        )


@pytest.mark.mlx
@pytest.mark.server
def test_unknown_routes_answer_in_their_dialect(keyed: RunningDaemon) -> None:
    with keyed.client(headers={"x-api-key": KEY}) as http:
        anthropic = http.post("/v1/messages/nothing", json={})
        assert anthropic.status_code == 404
        assert _shape(anthropic, Dialect.ANTHROPIC)["type"] == "not_found_error"
        ollama = http.get("/api/nothing")
        assert ollama.status_code == 404
        assert _shape(ollama, Dialect.OLLAMA) == {"message": "no such route"}
        openai_style = http.get("/v1/nothing")
        assert _shape(openai_style, Dialect.OPENAI)["code"] == "not_found"
        assert http.get("/health").status_code == 200
