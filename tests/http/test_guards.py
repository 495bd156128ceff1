"""Security guards and backpressure against a real daemon with an API key and tight limits.

Everything here is decided before or around the engine, so the daemon runs the fake one
(its residency and admission, the queue limit among them, are the runtime's own).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.conftest import RunningDaemon, fake_engine, start_daemon, stop_daemon, write_config

pytestmark = [pytest.mark.server]

KEY = "s3cret-key"
GOOD = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
AUTH = {"authorization": f"Bearer {KEY}"}


GUARDED = f"""
[server]
port = 0
api_key = "{KEY}"
allowed_hosts = ["mlxd.internal"]
cors_allow_origins = ["http://localhost:3000"]
max_request_bytes = 4096
request_timeout = "500ms"

[runtime]
max_batch_size = 1
max_queue = 1
keep_alive = "forever"

[models.tiny]
model = "org/tiny"
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("guarded")
    config = write_config(root / "mlxd.toml", GUARDED)
    config.chmod(0o600)
    # A token every 10 ms: six requests of 48 tokens overlap, so the queue overflows.
    running, thread = start_daemon(config, engine=fake_engine(GUARDED, root, token_delay=0.01))
    yield running
    stop_daemon(running, thread)


def still_serving(daemon: RunningDaemon) -> None:
    with daemon.client(headers=AUTH) as http:
        assert http.post("/v1/chat/completions", json=GOOD).status_code == 200
        assert http.get("/health").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {KEY}", KEY, f"Bearer {KEY}x", "Bearer"])
def test_api_key_required_everywhere_but_health(guarded: RunningDaemon, header: str | None) -> None:
    headers = {"authorization": header} if header is not None else {}
    with guarded.client(headers=headers) as http:
        for method, path in [
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
            ("GET", "/mlxd/status"),
            ("POST", "/mlxd/reload"),
            ("GET", "/nowhere"),
        ]:
            response = http.request(method, path, json=GOOD if method == "POST" else None)
            assert response.status_code == 401, (method, path)
            assert response.json()["error"]["code"] == "invalid_api_key"
            assert KEY not in response.text
        assert http.get("/health").status_code == 200
    still_serving(guarded)


def test_openai_client_with_key(guarded: RunningDaemon) -> None:
    client = openai.OpenAI(base_url=guarded.url + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]
    bad = openai.OpenAI(base_url=guarded.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_allowed_hosts_extend_the_loopback_names(guarded: RunningDaemon) -> None:
    with guarded.client(headers=AUTH) as http:
        assert http.get("/v1/models", headers={"host": "mlxd.internal:8080"}).status_code == 200
        assert http.get("/v1/models", headers={"host": "localhost"}).status_code == 200
        assert http.get("/v1/models", headers={"host": "[::1]:8080"}).status_code == 200
        refused = http.get("/v1/models", headers={"host": "other.internal", "x-forwarded-host": "localhost"})
        assert refused.status_code == 403


def test_cors_only_for_listed_origins(guarded: RunningDaemon) -> None:
    with guarded.client(headers=AUTH) as http:
        ok = http.get("/v1/models", headers={"origin": "http://localhost:3000"})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "http://localhost:3000"
        preflight = http.options(
            "/v1/chat/completions",
            headers={"origin": "http://localhost:3000", "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 204
        assert "POST" in preflight.headers["access-control-allow-methods"]
        denied = http.get("/v1/models", headers={"origin": "http://evil.example"})
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "origin_not_allowed"
    still_serving(guarded)


def test_text_plain_drive_by_post_is_refused(guarded: RunningDaemon) -> None:
    with guarded.client(headers=AUTH) as http:
        response = http.post(
            "/v1/chat/completions", content=b'{"messages": []}', headers={"content-type": "text/plain"}
        )
    assert response.status_code == 415
    still_serving(guarded)


def test_body_over_the_limit_without_content_length(guarded: RunningDaemon) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}]}'

    with guarded.client(headers={**AUTH, "content-type": "application/json"}) as http:
        response = http.post("/v1/chat/completions", content=chunks())
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large"
    assert "max_request_bytes" in error["message"]  # what to raise, for a large inline image
    still_serving(guarded)


def test_body_that_never_finishes_times_out(guarded: RunningDaemon) -> None:
    port = int(guarded.url.rsplit(":", 1)[1])
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            + f"Authorization: Bearer {KEY}\r\n".encode()
            + b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"messages"'
        )
        reply = sock.recv(4096)
    assert b" 408 " in reply.split(b"\r\n", 1)[0]
    assert time.monotonic() - started < 8
    still_serving(guarded)


def test_queue_overflow_is_429_with_retry_after_and_no_resets(guarded: RunningDaemon) -> None:
    """max_batch_size = 1 and max_queue = 1: of 6 simultaneous requests some must be told to retry."""

    async def one(http: httpx.AsyncClient) -> httpx.Response:
        body = {**GOOD, "max_tokens": 48}
        return await http.post("/v1/chat/completions", json=body)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=guarded.url, headers=AUTH, timeout=60) as http:
            return list(await asyncio.gather(*[one(http) for _ in range(6)]))

    responses = asyncio.run(burst())  # a reset connection would raise here
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) >= 2
    assert statuses.count(429) >= 1
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error"]["code"] == "queue_full"
            assert response.json()["error"]["type"] == "rate_limit_error"
    still_serving(guarded)


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes the connection (recv returns b"") before ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    return True


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /v1/models HTTP/1.1\r\nHost: loc", b"POST /v1/chat/completions HTTP/1.1\r\n"],
    ids=["silent", "half-a-header", "request-line-only"],
)
def test_a_connection_that_never_finishes_its_headers_is_closed(guarded: RunningDaemon, sent: bytes) -> None:
    port = int(guarded.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(sent)
        assert _closed_within(sock, 6.0)
    still_serving(guarded)


def test_a_kept_alive_connection_gets_the_same_deadline_for_its_next_request(guarded: RunningDaemon) -> None:
    port = int(guarded.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"GET /health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {KEY}\r\n\r\n".encode()
        )
        assert b" 200 " in sock.recv(4096).split(b"\r\n", 1)[0]
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHo")
        assert _closed_within(sock, 6.0)
    still_serving(guarded)
