"""Strict request decoding through the real server: wrong types, deep nesting, broken bodies,
and a client that hangs up. Each case ends with a valid request and ``/health`` answering."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import LogRecords, RunningDaemon
from tests.http.test_bad_input import GOOD, assert_envelope, assert_still_serving, post

pytestmark = [pytest.mark.mlx, pytest.mark.server]

PROMPT = {"model": "tiny", "prompt": "hi", "max_tokens": 2}
STRINGS_FOR_NUMBERS = [
    ("max_tokens", "8"),
    ("stream", "true"),
    ("temperature", "0.5"),
    ("top_p", "1"),
    ("n", "1"),
    ("seed", "3"),
    ("presence_penalty", "0"),
    ("logprobs", "true"),
    ("max_tokens", True),
    ("temperature", [0.5]),
]


@pytest.mark.parametrize(
    ("field", "value"), STRINGS_FOR_NUMBERS, ids=[f"{f}={v!r}" for f, v in STRINGS_FOR_NUMBERS]
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_strings_are_never_taken_for_numbers_or_booleans(
    daemon: RunningDaemon, path: str, field: str, value: Any
) -> None:
    body = GOOD if path == "/v1/chat/completions" else PROMPT
    response = post(daemon, {**body, field: value}, path)
    assert_envelope(response, 400, param=field)
    assert field in response.json()["error"]["message"]
    assert_still_serving(daemon)


def test_the_openai_client_sees_a_bad_request_naming_the_field(daemon: RunningDaemon) -> None:
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tiny", messages=GOOD["messages"], max_tokens="8")  # type: ignore[arg-type]
    assert error.value.body["param"] == "max_tokens"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="tiny", prompt="hi", extra_body={"stream": "true"})
    assert error.value.body["param"] == "stream"  # type: ignore[index]
    assert_still_serving(daemon)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_nesting_deeper_than_64_is_a_400(daemon: RunningDaemon, depth: int) -> None:
    raw = '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "tools": ' + nested(depth) + "}"
    response = post(daemon, raw.encode())
    assert_envelope(response, 400, "invalid_body")
    assert "deeper than 64" in response.json()["error"]["message"]
    assert_still_serving(daemon)


def test_nesting_up_to_the_limit_and_brackets_in_strings_pass(daemon: RunningDaemon) -> None:
    # Unknown fields are ignored, so only the depth check could refuse these.
    deep = '{"model": "tiny", "messages": [{"role": "user", "content": "' + "[" * 500 + '"}], '
    deep += '"max_tokens": 2, "unknown": ' + nested(63) + "}"
    response = post(daemon, deep.encode())
    assert response.status_code == 200, response.text
    assert_still_serving(daemon)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "the request body is empty"),
        (b"  \n ", "the request body is empty"),
        (b'{"model": "\\ud800"}', "not valid UTF-8 JSON"),
        (b'{"model": "\xed\xa0\x80"}', "not valid UTF-8 JSON"),
        (b"\xff\xfe{}", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (b"null", "must be a JSON object, not null"),
        (b'"text"', "must be a JSON object, not a string"),
        (b'{"messages": [}', "not valid JSON"),
    ],
    ids=[
        "empty",
        "blank",
        "lone-surrogate",
        "surrogate-bytes",
        "bad-utf8",
        "array",
        "null",
        "string",
        "broken",
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_broken_bodies_say_what_is_wrong(daemon: RunningDaemon, path: str, raw: bytes, message: str) -> None:
    response = post(daemon, raw, path)
    assert_envelope(response, 400)
    assert message in response.json()["error"]["message"]
    assert_still_serving(daemon)


def test_a_missing_field_is_named(daemon: RunningDaemon) -> None:
    response = post(daemon, {"model": "tiny", "messages": [{"content": "no role"}]})
    assert_envelope(response, 400, param="messages[0].role")
    assert response.json()["error"]["message"] == "messages[0].role is required"
    assert_still_serving(daemon)


def _requests(daemon: RunningDaemon, status: str) -> float:
    with daemon.client() as http:
        text = http.get("/metrics").text
    prefix = 'mlxd_requests_total{dialect="openai",route="/v1/completions",status="' + status + '"}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_a_client_that_hangs_up_is_a_499_in_one_line(daemon: RunningDaemon, records: LogRecords) -> None:
    before = _requests(daemon, "499")
    port = int(daemon.url.rsplit(":", 1)[1])
    body = httpx.Request(
        "POST",
        daemon.url + "/v1/completions",
        json={"model": "tiny-lora", "prompt": "x" * 50, "max_tokens": 1500},
    ).read()
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head.encode() + body)
        time.sleep(0.3)
        sock.close()
    deadline = time.monotonic() + 10
    while _requests(daemon, "499") < before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _requests(daemon, "499") == before + 3
    assert _requests(daemon, "500") == 0
    access = [
        r.getMessage() for r in records.records if r.name == "mlxd.access" and " 499 " in r.getMessage()
    ]
    assert len(access) == 3
    assert all(m.startswith("POST /v1/completions 499") for m in access)
    assert not [r for r in records.records if r.exc_info or r.levelno >= logging.ERROR]
    assert_still_serving(daemon)
