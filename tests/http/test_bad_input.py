"""Every bad input gets the right 4xx in OpenAI's envelope, and the daemon keeps serving.

Each case ends with a valid request that succeeds and ``/health`` answering 200, the
way the seed server's failures were found: one bad request must never harm the next.
The daemon is real but its engine is the fake one: every answer here is decided by the
HTTP layer, the config or admission (which runs for real on the fake model's facts).
``test_openai_api`` checks the model-dependent refusals once more with real MLX.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import pytest

from tests.conftest import RunningDaemon, eventually

pytestmark = [pytest.mark.server]

GOOD = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def assert_envelope(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert "Traceback" not in error["message"]
    assert "/tmp" not in error["message"]


def assert_still_serving(daemon: RunningDaemon) -> None:
    with daemon.client() as http:
        response = http.post("/v1/chat/completions", json=GOOD)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == 2
        assert http.get("/health").status_code == 200


def post(
    daemon: RunningDaemon, body: Any, path: str = "/v1/chat/completions", **kwargs: Any
) -> httpx.Response:
    with daemon.client() as http:
        if isinstance(body, bytes):
            return http.post(path, content=body, headers={"content-type": "application/json"}, **kwargs)
        return http.post(path, json=body, **kwargs)


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"messages": [}', b"[1, 2]", b'"text"', b"5", b"null", b"\xff\xfe{}", b'{"messages": "\xff"}'],
    ids=["truncated", "broken", "array", "string", "number", "null", "bad-utf8", "bad-utf8-value"],
)
def test_malformed_bodies(fake_daemon: RunningDaemon, raw: bytes) -> None:
    assert_envelope(post(fake_daemon, raw), 400)
    assert_still_serving(fake_daemon)


WRONG_TYPES = {
    "model": 5,
    "messages": "hello",
    "max_tokens": "many",
    "max_completion_tokens": 1.5,
    "temperature": "hot",
    "top_p": [],
    "stop": 5,
    "stream": "yes",
    "stream_options": 5,
    "seed": "x",
    "logit_bias": [1, 2],
    "logprobs": "x",
    "top_logprobs": "x",
    "presence_penalty": "x",
    "frequency_penalty": {},
    "n": "x",
    "user": 5,
    "top_k": "x",
    "min_p": "x",
    "repetition_penalty": "x",
    "repetition_context_size": "x",
    "role_mapping": 5,
    "adapters": 5,
    "response_format": 5,
    "tools": 5,
    "chat_template_kwargs": 5,
}


@pytest.mark.parametrize(("field", "value"), list(WRONG_TYPES.items()), ids=list(WRONG_TYPES))
def test_wrong_types(fake_daemon: RunningDaemon, field: str, value: Any) -> None:
    assert_envelope(post(fake_daemon, {**GOOD, field: value}), 400)
    assert_still_serving(fake_daemon)


OUT_OF_RANGE = [
    ("max_tokens", -1, "max_tokens"),
    ("max_tokens", 0, "max_tokens"),
    ("max_tokens", 10**30, "max_tokens"),
    ("temperature", -0.5, "temperature"),
    ("temperature", 3, "temperature"),
    ("top_p", 1.5, "top_p"),
    ("top_k", -1, "top_k"),
    ("top_k", 10**7, "top_k"),
    ("min_p", 2, "min_p"),
    ("logit_bias", {"999999": 1}, "logit_bias"),
    ("logit_bias", {"-1": 1}, "logit_bias"),
    ("logit_bias", {"5": 1000}, "logit_bias"),
    ("logit_bias", {"abc": 1}, "logit_bias"),
    ("logprobs", 11, "logprobs"),
    ("top_logprobs", 21, "top_logprobs"),
    ("presence_penalty", 3, "presence_penalty"),
    ("repetition_penalty", 0, "repetition_penalty"),
    ("repetition_context_size", 0, "repetition_context_size"),
    ("stop", ["a", 5], "stop"),
    ("stop", [""], "stop"),
    ("stop", ["x"] * 100, "stop"),
    ("stop", "y" * 10_000, "stop"),
    ("n", 0, "n"),
    ("n", 9, "n"),
    ("seed", 2**70, "seed"),
    ("tool_choice", "required", "tool_choice"),
    ("tool_choice", {"type": "function", "function": {"name": "nope"}}, "tool_choice"),
    ("tool_choice", "sometimes", "tool_choice"),
    ("response_format", {"type": "xml"}, "response_format"),
    ("response_format", {"type": "json_schema"}, "response_format"),
    (
        "response_format",
        {"type": "json_schema", "json_schema": {"schema": {"type": "object", "not": {}}}},
        "response_format",
    ),
    (
        "response_format",
        {"type": "json_schema", "json_schema": {"schema": {"$ref": "http://x/s.json"}}},
        "response_format",
    ),
]


@pytest.mark.parametrize(
    ("field", "value", "param"), OUT_OF_RANGE, ids=[f"{f}={str(v)[:12]}" for f, v, _ in OUT_OF_RANGE]
)
def test_out_of_range(fake_daemon: RunningDaemon, field: str, value: Any, param: str) -> None:
    response = post(fake_daemon, {**GOOD, field: value})
    assert_envelope(response, 400)
    assert param in (response.json()["error"]["param"] or "")
    assert_still_serving(fake_daemon)


UNSUPPORTED = [
    ("functions", [{"name": "f"}]),
    ("function_call", "auto"),
]


@pytest.mark.parametrize(("field", "value"), UNSUPPORTED, ids=[f for f, _ in UNSUPPORTED])
def test_unsupported_fields_are_named_never_ignored(
    fake_daemon: RunningDaemon, field: str, value: Any
) -> None:
    assert_envelope(post(fake_daemon, {**GOOD, field: value}), 400, "unsupported_parameter", field)
    assert_still_serving(fake_daemon)


@pytest.mark.parametrize(
    ("body", "path", "param"),
    [
        ({"model": "tiny", "messages": []}, "/v1/chat/completions", "messages"),
        (
            {"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]},
            "/v1/chat/completions",
            "messages[0].role",
        ),
        (
            {
                "model": "tiny",
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}
                ],
            },
            "/v1/chat/completions",
            "messages[0].content[0]",
        ),
        ({"model": "tiny", "prompt": ""}, "/v1/completions", "prompt"),
        ({"model": "tiny", "prompt": []}, "/v1/completions", "prompt"),
        ({"model": "tiny", "prompt": ["a", "b"]}, "/v1/completions", "prompt"),
        ({"model": "tiny", "prompt": [10**6]}, "/v1/completions", "prompt"),
        ({"model": "tiny", "prompt": "x", "suffix": "y"}, "/v1/completions", "suffix"),
        ({"model": "tiny"}, "/v1/completions", "prompt"),
        ({"model": "tiny"}, "/v1/chat/completions", "messages"),
    ],
    ids=[
        "no-messages",
        "bad-role",
        "image-part",
        "empty-prompt",
        "empty-list",
        "prompt-list",
        "token-out-of-vocab",
        "suffix",
        "missing-prompt",
        "missing-messages",
    ],
)
def test_empty_or_unservable_prompts(
    fake_daemon: RunningDaemon, body: dict[str, Any], path: str, param: str
) -> None:
    response = post(fake_daemon, body, path)
    assert_envelope(response, 400, param=param)
    assert_still_serving(fake_daemon)


@pytest.mark.parametrize(
    "name",
    [
        "nope",
        "../../etc/passwd",
        "/etc/passwd",
        "~/models/x",
        "mlx-community/Other-Model-4bit",
        "C:\\x",
        "tiny/../tiny",
    ],
)
def test_unknown_and_path_like_models_are_404(fake_daemon: RunningDaemon, name: str) -> None:
    assert_envelope(post(fake_daemon, {**GOOD, "model": name}), 404, "model_not_found", "model")
    assert_still_serving(fake_daemon)


@pytest.mark.parametrize("adapter", ["../adapters/x", "/etc", "tiny", "mlx-community/x"])
def test_path_like_adapters_are_400(fake_daemon: RunningDaemon, adapter: str) -> None:
    assert_envelope(post(fake_daemon, {**GOOD, "adapters": adapter}), 400, param="adapters")
    assert_still_serving(fake_daemon)


def test_prompt_longer_than_context(fake_daemon: RunningDaemon) -> None:
    body = {"model": "plain", "messages": [{"role": "user", "content": "word " * 2000}]}
    assert_envelope(post(fake_daemon, body), 400, "context_length_exceeded")
    assert_still_serving(fake_daemon)


def test_unknown_route_and_method(fake_daemon: RunningDaemon) -> None:
    with fake_daemon.client() as http:
        assert_envelope(http.get("/v1/nothing"), 404, "not_found")
        assert_envelope(http.get("/v1/chat/completions"), 405)
    assert_still_serving(fake_daemon)


def test_wrong_content_type(fake_daemon: RunningDaemon) -> None:
    with fake_daemon.client() as http:
        response = http.post("/v1/chat/completions", content=b"{}", headers={"content-type": "text/plain"})
    assert_envelope(response, 415, "unsupported_media_type")
    assert_still_serving(fake_daemon)


def test_oversize_body_is_refused_before_reading(fake_daemon: RunningDaemon) -> None:
    huge = b'{"messages": [{"role": "user", "content": "' + b"x" * (5 * 2**20) + b'"}]}'
    assert_envelope(post(fake_daemon, huge), 413, "request_too_large")
    assert_still_serving(fake_daemon)


@pytest.mark.parametrize(
    "host", ["evil.example", "127.0.0.1.evil.example", "localhost:abc", "", "user@localhost"]
)
def test_bad_host_header(fake_daemon: RunningDaemon, host: str) -> None:
    with fake_daemon.client() as http:
        response = http.post("/v1/chat/completions", json=GOOD, headers={"host": host})
    assert_envelope(response, 403, "host_not_allowed")
    assert_still_serving(fake_daemon)


def test_missing_host_header(fake_daemon: RunningDaemon) -> None:
    port = int(fake_daemon.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.0\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.split(b"\r\n", 1)[0].endswith(b"403 Forbidden")
    assert_still_serving(fake_daemon)


def test_bad_origin(fake_daemon: RunningDaemon) -> None:
    with fake_daemon.client() as http:
        response = http.post("/v1/chat/completions", json=GOOD, headers={"origin": "http://evil.example"})
        assert "access-control-allow-origin" not in response.headers
    assert_envelope(response, 403, "origin_not_allowed")
    assert_still_serving(fake_daemon)


def _active(daemon: RunningDaemon) -> int:
    return int(daemon.status()["active_sequences"])  # type: ignore[call-overload]


def _steps(daemon: RunningDaemon) -> int:
    """Decode steps the engine took so far (``batches`` in ``/mlxd/status``)."""
    return int(daemon.status()["batches"])  # type: ignore[call-overload]


def assert_stopped_early(daemon: RunningDaemon, before: int, tokens: int) -> None:
    """The sequence was freed because its client left, not because it ran to the end: it
    ends soon, after far fewer decode steps than its tokens (however slow the machine)."""
    assert eventually(lambda: _active(daemon) == 0, 10.0)
    assert _steps(daemon) - before < tokens / 2


#: Both engines: the fake one shows the HTTP side lets go; real MLX, that the worker does.
#: The token counts cannot finish before the checks (tiny-lora has no max_tokens_limit).
ENGINES = [("fake_daemon", 20000), pytest.param("daemon", 1500, marks=pytest.mark.mlx, id="mlx")]


@pytest.mark.parametrize(("served", "tokens"), ENGINES)
def test_disconnect_mid_stream_frees_the_sequence(
    request: pytest.FixtureRequest, served: str, tokens: int
) -> None:
    daemon: RunningDaemon = request.getfixturevalue(served)
    before = _steps(daemon)
    body = {**GOOD, "max_tokens": tokens, "stream": True, "model": "tiny-lora"}
    with daemon.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        next(lines)
        assert _active(daemon) >= 1
    assert_stopped_early(daemon, before, tokens)  # the client left after the first event
    assert_still_serving(daemon)


@pytest.mark.parametrize(("served", "tokens"), ENGINES)
def test_disconnect_mid_non_stream_frees_the_sequence(
    request: pytest.FixtureRequest, served: str, tokens: int
) -> None:
    daemon: RunningDaemon = request.getfixturevalue(served)
    before = _steps(daemon)
    port = int(daemon.url.rsplit(":", 1)[1])
    body = httpx.Request(
        "POST",
        daemon.url + "/v1/completions",
        json={"model": "tiny-lora", "prompt": "x" * 50, "max_tokens": tokens},
    ).read()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    assert eventually(lambda: _active(daemon) >= 1, 5.0)
    sock.close()
    assert_stopped_early(daemon, before, tokens)
    assert_still_serving(daemon)


MODEL_LIMITS = [
    ({"top_k": 10**7}, "/v1/chat/completions", "top_k"),
    ({"logit_bias": {"999999": 1}}, "/v1/chat/completions", "logit_bias"),
    ({"prompt": [10**6], "messages": None}, "/v1/completions", "prompt"),
    (
        {"messages": [{"role": "user", "content": "word " * 2000}], "model": "plain"},
        "/v1/chat/completions",
        "messages",
    ),
]


@pytest.mark.mlx
@pytest.mark.parametrize(
    ("fields", "path", "param"), MODEL_LIMITS, ids=["top-k", "logit-bias", "token-id", "context"]
)
def test_what_the_real_model_cannot_serve_is_refused(
    daemon: RunningDaemon, fields: dict[str, Any], path: str, param: str
) -> None:
    """The checks against the model's own vocabulary and context, with its real tokenizer."""
    body = {key: value for key, value in {**GOOD, **fields}.items() if value is not None}
    response = post(daemon, body, path)
    assert_envelope(response, 400, param=param)
    assert_still_serving(daemon)


def test_many_bad_requests_then_a_good_one(fake_daemon: RunningDaemon) -> None:
    """TensorRT-LLM's check: a burst of bad requests from threads, then the daemon still works."""
    bodies: list[Any] = [
        b"{",
        {"messages": []},
        {**GOOD, "stop": 5},
        {**GOOD, "top_k": 10**7},
        {**GOOD, "logit_bias": {"99999999": 1}},
    ]

    def hammer() -> None:
        for i in range(20):
            post(fake_daemon, bodies[i % len(bodies)])

    threads = [threading.Thread(target=hammer) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert_still_serving(fake_daemon)
