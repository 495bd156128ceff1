"""``bench.embed_load``: client processes that send embedding requests at once, against a real
daemon on the fake engine (what is timed is the clients' doing)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import RunningDaemon

pytestmark = [pytest.mark.server]


def _served(daemon: RunningDaemon, at_least: float = 0.0) -> float:
    """Embedding requests answered 200 so far, once they are at least ``at_least`` (a request
    is counted just after its last byte went out, so the client may see it first)."""
    deadline = time.monotonic() + 5
    while True:
        with daemon.client() as http:
            lines = http.get("/metrics").text.splitlines()
        served = sum(
            float(line.rsplit(" ", 1)[1])
            for line in lines
            if line.startswith("mlxd_requests_total") and 'route="/v1/embeddings",status="200"' in line
        )
        if served >= at_least or time.monotonic() > deadline:
            return served
        time.sleep(0.01)


def test_each_client_warms_up_then_all_send_their_share_from_one_start(fake_daemon: RunningDaemon) -> None:
    from bench.embed_load import EmbedClients

    clients = EmbedClients(fake_daemon.url, 2, "base64")
    try:
        before = _served(fake_daemon)
        clients.prepare("tiny", 3, requests=4, offset=0)
        warmed = _served(fake_daemon, before + 2)
        seconds = clients.go()
        after = _served(fake_daemon, warmed + 8)
    finally:
        clients.close()
    assert warmed - before == 2  # one warm-up request each, before the round starts
    assert after - warmed == 8  # then four each, all inside the timed round
    assert 0 < seconds < 60
