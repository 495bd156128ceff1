"""The bad-input list of Chat Completions, against every other dialect.

Each rule holds in every dialect because each translator hands its fields to the one
request core and admission: this runs the list through Responses, Anthropic Messages and
both Ollama generation routes, checks each refusal's status and the dialect's own error
envelope, and ends every case with a good request of that dialect and ``/health`` 200.
The engine is the fake one: every answer here is the HTTP layer's, the config's or
admission's (which runs for real on the fake model's facts).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import RunningDaemon, eventually

pytestmark = [pytest.mark.server]

HI = [{"role": "user", "content": "hi"}]


def openai_envelope(response: httpx.Response) -> str:
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    return str(error["message"])


def anthropic_envelope(response: httpx.Response) -> str:
    body = response.json()
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    return str(body["error"]["message"])


def ollama_envelope(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    return str(body["error"])


@dataclass(frozen=True)
class Dialect:
    """A dialect's generation route, a good body, where each neutral field lives, its envelope."""

    name: str
    path: str
    good: dict[str, Any]
    fields: dict[str, str]
    envelope: Callable[[httpx.Response], str]

    def body(self, **changes: Any) -> dict[str, Any]:
        """The good body with neutral fields set (by their dotted place in this dialect)."""
        body = copy.deepcopy(self.good)
        for neutral, value in changes.items():
            *parents, leaf = self.fields[neutral].split(".")
            node = body
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return body


OLLAMA_FIELDS = {
    "model": "model",
    "messages": "messages",
    "max_tokens": "options.num_predict",
    "temperature": "options.temperature",
    "top_p": "options.top_p",
    "top_k": "options.top_k",
    "stop": "options.stop",
    "stream": "stream",
    "format": "format",
}
DIALECTS = [
    Dialect(
        "responses",
        "/v1/responses",
        {"model": "tiny", "input": "hi", "max_output_tokens": 2},
        {
            "model": "model",
            "messages": "input",
            "max_tokens": "max_output_tokens",
            "temperature": "temperature",
            "top_p": "top_p",
            "stream": "stream",
            "format": "text.format",
        },
        openai_envelope,
    ),
    Dialect(
        "anthropic",
        "/v1/messages",
        {"model": "tiny", "max_tokens": 2, "messages": HI},
        {
            "model": "model",
            "messages": "messages",
            "max_tokens": "max_tokens",
            "temperature": "temperature",
            "top_p": "top_p",
            "top_k": "top_k",
            "stop": "stop_sequences",
            "stream": "stream",
        },
        anthropic_envelope,
    ),
    Dialect(
        "ollama-chat",
        "/api/chat",
        {"model": "tiny", "messages": HI, "stream": False, "options": {"num_predict": 2}},
        OLLAMA_FIELDS,
        ollama_envelope,
    ),
    Dialect(
        "ollama-generate",
        "/api/generate",
        {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 2}},
        {**OLLAMA_FIELDS, "messages": "prompt"},
        ollama_envelope,
    ),
]
IDS = [d.name for d in DIALECTS]


def refused(daemon: RunningDaemon, dialect: Dialect, response: httpx.Response, status: int) -> str:
    """The refusal's status and envelope are right, and the daemon still serves this dialect."""
    assert response.status_code == status, response.text
    message = dialect.envelope(response)
    assert message
    assert "Traceback" not in message
    assert "/tmp" not in message
    with daemon.client() as http:
        good = http.post(dialect.path, json=dialect.good)
        assert good.status_code == 200, good.text
        assert http.get("/health").status_code == 200
    return message


def post(daemon: RunningDaemon, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    with daemon.client() as http:
        if isinstance(body, bytes):
            return http.post(path, content=body, headers={"content-type": "application/json"}, **kwargs)
        return http.post(path, json=body, **kwargs)


@pytest.mark.parametrize("dialect", DIALECTS, ids=IDS)
@pytest.mark.parametrize(
    "raw",
    [b"{", b"[1, 2]", b"null", b"\xff\xfe{}", b""],
    ids=["truncated", "array", "null", "bad-utf8", "empty"],
)
def test_malformed_bodies(fake_daemon: RunningDaemon, dialect: Dialect, raw: bytes) -> None:
    refused(fake_daemon, dialect, post(fake_daemon, dialect.path, raw), 400)


CASES: list[tuple[str, Any, int]] = [
    # wrong types
    ("model", 5, 400),
    ("messages", 5, 400),
    ("max_tokens", "many", 400),
    ("temperature", "hot", 400),
    ("stream", "yes", 400),
    ("stop", 5, 400),
    # out of range
    ("temperature", -0.5, 400),
    ("temperature", 3, 400),
    ("top_p", 1.5, 400),
    ("top_k", 10**7, 400),
    ("max_tokens", 10**6, 400),
    ("stop", ["x"] * 100, 400),
    ("stop", [""], 400),
    ("format", {"type": "object", "not": {}}, 400),
    # names a request may not use
    ("model", "nope", 404),
    ("model", "../../etc/passwd", 404),
    ("model", "mlx-community/Other-Model-4bit", 404),
]


@pytest.mark.parametrize("dialect", DIALECTS, ids=IDS)
@pytest.mark.parametrize(("field", "value", "status"), CASES, ids=[f"{f}={str(v)[:10]}" for f, v, _ in CASES])
def test_bad_fields(
    fake_daemon: RunningDaemon, dialect: Dialect, field: str, value: Any, status: int
) -> None:
    if field not in dialect.fields:
        pytest.skip(f"{dialect.name} has no {field}")
    if field == "format" and dialect.name == "responses":
        value = {"type": "json_schema", "name": "x", "schema": value}
    refused(fake_daemon, dialect, post(fake_daemon, dialect.path, dialect.body(**{field: value})), status)


@pytest.mark.parametrize("dialect", DIALECTS, ids=IDS)
def test_empty_and_too_long_prompts(fake_daemon: RunningDaemon, dialect: Dialect) -> None:
    # (In Ollama's API no messages or prompt means "load the model": tested with real MLX.)
    if not dialect.name.startswith("ollama"):
        refused(fake_daemon, dialect, post(fake_daemon, dialect.path, dialect.body(messages=[])), 400)
    long = "word " * 2000
    words: Any = (
        long if dialect.fields["messages"] in ("input", "prompt") else [{"role": "user", "content": long}]
    )
    message = refused(
        fake_daemon,
        dialect,
        post(fake_daemon, dialect.path, dialect.body(model="plain", messages=words)),
        400,
    )
    assert "context" in message


@pytest.mark.parametrize("dialect", DIALECTS, ids=IDS)
def test_guards_answer_in_the_dialect(fake_daemon: RunningDaemon, dialect: Dialect) -> None:
    with fake_daemon.client() as http:
        text = http.post(dialect.path, content=b"{}", headers={"content-type": "text/plain"})
        host = http.post(dialect.path, json=dialect.good, headers={"host": "evil.example"})
        origin = http.post(dialect.path, json=dialect.good, headers={"origin": "http://evil.example"})
    refused(fake_daemon, dialect, text, 415)
    refused(fake_daemon, dialect, host, 403)
    refused(fake_daemon, dialect, origin, 403)
    huge = b'{"model": "tiny", "x": "' + b"x" * (5 * 2**20) + b'"}'
    refused(fake_daemon, dialect, post(fake_daemon, dialect.path, huge), 413)


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/api/nothing", DIALECTS[2]),
        ("/v1/messages/nothing", DIALECTS[1]),
        ("/v1/responses/x/y/z", DIALECTS[0]),
    ],
    ids=["ollama", "anthropic", "openai"],
)
def test_unknown_routes_answer_in_the_dialect(
    fake_daemon: RunningDaemon, path: str, dialect: Dialect
) -> None:
    with fake_daemon.client() as http:
        response = http.get(path)
    refused(fake_daemon, dialect, response, 404)


@pytest.mark.parametrize("dialect", DIALECTS, ids=IDS)
def test_a_disconnect_mid_stream_frees_the_sequence(fake_daemon: RunningDaemon, dialect: Dialect) -> None:
    body = dialect.body(stream=True, max_tokens=20000, model="tiny-lora")
    with fake_daemon.client() as http, http.stream("POST", dialect.path, json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a dropped iterator closes the response
        next(lines)
        assert fake_daemon.status()["active_sequences"] == 1
    # 20,000 tokens take the fake engine 20 s: freed well before, the client's leaving did it.
    assert eventually(lambda: fake_daemon.status()["active_sequences"] == 0, 10.0)
    assert post(fake_daemon, dialect.path, dialect.good).status_code == 200
