"""The admin routes and the CLI share their wire types: what the daemon sends decodes strictly.

A field the daemon adds or renames without the shared struct fails here as a decode
error or a lost key, instead of surfacing as a wrong ``mlxd status``.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from mlxd.cli.client import DaemonClient
from mlxd.errors import MlxdError
from mlxd.protocol.admin import DaemonStatus, LoadResult, ReloadResult, UnloadResult
from tests.conftest import RunningDaemon

pytestmark = [pytest.mark.mlx, pytest.mark.server]


def strictly(raw: bytes, kind: type[Any]) -> Any:
    """Decode ``raw`` as ``kind`` with no coercion, and check that no key was dropped."""
    decoded = msgspec.json.decode(raw, type=kind, strict=True)
    assert json.loads(msgspec.json.encode(decoded)) == json.loads(raw)
    return decoded


def test_every_admin_answer_is_its_shared_struct(daemon: RunningDaemon) -> None:
    with daemon.client() as http:
        loaded = strictly(http.post("/mlxd/models/tiny/load").content, LoadResult)
        status = strictly(http.get("/mlxd/status").content, DaemonStatus)
        unloaded = strictly(http.post("/mlxd/models/tiny/unload").content, UnloadResult)
        again = strictly(http.post("/mlxd/models/tiny/unload").content, UnloadResult)
        reloaded = strictly(http.post("/mlxd/reload").content, ReloadResult)
    assert loaded == LoadResult(alias="tiny", loaded=True)
    assert "tiny" in [m.alias for m in status.models]
    assert status.config.generation >= 1
    assert (unloaded.unloaded, again.unloaded) == (True, False)
    assert reloaded.generation >= status.config.generation
    # The CLI's own client reads the same answers.
    client = DaemonClient(daemon.url)
    try:
        assert client.status().pid == status.pid
    finally:
        client.close()


@pytest.fixture
def drifted() -> Iterator[str]:
    """A daemon stand-in whose /mlxd/status lost fields and changed a type."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps({"version": "x", "pid": "12", "models": []}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.server
def test_a_drifted_answer_is_a_decode_error_not_a_wrong_status(drifted: str) -> None:
    client = DaemonClient(drifted)
    try:
        with pytest.raises(MlxdError) as caught:
            client.status()
    finally:
        client.close()
    assert caught.value.message.startswith(f"unexpected answer from {drifted}/mlxd/status: ")
    assert "`mlxd restart`" in str(caught.value.hint)
