"""More connections than the daemon serves: ``[server] max_connections`` against a real
``mlxd serve`` and raw sockets.

Beyond the cap a new connection gets one quick 503 in the API's envelope and is closed;
the connections within it keep being served (``/health`` answers), the daemon answers
again once the flood is gone, and its log holds a few lines, not one per connection.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.test_serve import isolated_env, wait_healthy
from tests.conftest import free_port

pytestmark = [pytest.mark.server]

CAP = 16
FLOOD = 200
HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def serve(root: Path, config: str, **popen: object) -> tuple[str, subprocess.Popen[str]]:
    port = free_port()
    (root / "mlxd.toml").write_text(f"[server]\nport = {port}\n{config}")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlxd", "serve", "--config", str(root / "mlxd.toml")],
        env=isolated_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[call-overload]
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, process)
    return url, process


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    url, process = serve(tmp_path, f"max_connections = {CAP}\n")
    try:
        yield url, tmp_path / "state" / "mlxd" / "log" / "mlxd.log"
    finally:
        process.terminate()
        process.communicate(timeout=60)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from a raw socket: status, headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, body


def test_connections_beyond_the_cap_get_a_quick_503_and_health_keeps_answering(
    capped: tuple[str, Path],
) -> None:
    url, log = capped
    before = log.read_text().count("\n")
    # A client already connected (within the cap) before the flood.
    regular = connect(url)
    regular.sendall(HEALTH)
    assert answer(regular)[0] == 200

    flood = []
    try:
        # Each sends its request at once: a connection over the cap is closed unanswered if
        # it sends nothing within a second, which a stalled test process would hit.
        for _ in range(FLOOD):
            flood.append(connect(url))
            flood[-1].sendall(HEALTH)
        statuses = []
        refused = None
        for sock in flood:
            status, headers, body = answer(sock)
            statuses.append(status)
            if status == 503:
                refused = (headers, body)
                assert sock.recv(1) == b""  # and the daemon closed it
        # The regular client's connection is within the cap: still served during the flood.
        regular.sendall(HEALTH)
        assert answer(regular)[0] == 200
    finally:
        for sock in flood:
            sock.close()
    assert statuses.count(200) == CAP - 1  # the cap counts the regular client too
    assert statuses.count(503) == FLOOD - CAP + 1
    assert refused is not None
    headers, body = refused
    assert headers["retry-after"] == "1"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "unavailable"
    assert error["type"] == "server_error"
    assert f"max_connections = {CAP}" in error["message"]

    # Once they are gone, new connections are served again.
    deadline = time.monotonic() + 10
    while httpx.get(url + "/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    regular.close()
    # 200 refusals are a handful of log lines (the limiter sums up the identical ones).
    lines = log.read_text().splitlines()[before:]
    refusals = [line for line in lines if "refusing connections beyond max_connections" in line]
    assert 1 <= len(refusals) <= 25
    assert len(lines) < 60
    assert not [line for line in lines if "Traceback" in line or "ERROR" in line]


UPGRADE = (
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def test_websocket_upgrades_are_plain_requests_and_free_their_place_under_the_cap(
    capped: tuple[str, Path],
) -> None:
    """No route speaks WebSocket: an upgrade is answered as the HTTP request it also is, and
    its connection leaves the cap when it closes (a protocol swapped in would never tell it)."""
    url, _ = capped
    for _ in range(3 * CAP):
        with connect(url) as sock:
            sock.sendall(UPGRADE)
            status, _, _ = answer(sock)
            assert status == 200  # /health itself, not 101 Switching Protocols
    deadline = time.monotonic() + 10
    while True:  # the closed ones are counted out once the daemon sees them go
        with connect(url) as sock:
            sock.sendall(HEALTH)
            if answer(sock)[0] == 200:
                break
        assert time.monotonic() < deadline, "upgraded connections still hold the cap"
        time.sleep(0.05)


def _low_file_limit() -> None:
    """In the child: start with a soft open-file limit of 300, as macOS starts at 256."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(300, soft), hard))


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc/<pid>/limits")
def test_the_daemon_raises_its_open_file_limit_to_fit_max_connections(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000 + 256:
        pytest.skip("the hard open-file limit here is too low to raise to")
    _, process = serve(tmp_path, "max_connections = 2000\n", preexec_fn=_low_file_limit)

    def open_files() -> tuple[int, int]:
        limits = Path(f"/proc/{process.pid}/limits").read_text().splitlines()
        soft, hard = next(line for line in limits if line.startswith("Max open files")).split()[3:5]
        return int(soft), int(hard)

    try:
        # mlx-lm sets the limit to (2048, 4096) of its own accord when the MLX worker imports
        # it, which happens before the daemon answers /health; the daemon raises it after that.
        # (The test reads the child's limits: this process may have imported mlx-lm too.)
        deadline = time.monotonic() + 10
        while open_files()[0] < 2000 + 256:
            assert time.monotonic() < deadline, open_files()
            time.sleep(0.05)
    finally:
        process.terminate()
        process.communicate(timeout=60)
