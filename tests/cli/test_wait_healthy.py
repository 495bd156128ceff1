"""Waiting for a daemon that was just started: what it recorded is read before its port is
asked, and each question to the port has a short timeout of its own."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from mlxd import supervision
from mlxd.cli.client import DaemonClient
from mlxd.cli.lifecycle import wait_healthy
from tests.cli.conftest import Home


class CountingClient(DaemonClient):
    """A real client that counts its health probes."""

    probes = 0

    def is_healthy(self, timeout: float | None = None) -> bool:
        self.probes += 1
        return super().is_healthy(timeout)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port some program listens on without ever answering."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_a_recorded_failure_is_reported_without_asking_the_port(home: Home, silent_port: int) -> None:
    since = time.time()
    supervision.record_start_failure("port 1 is in use: set [server] port", config=home.config)
    client = CountingClient(f"http://127.0.0.1:{silent_port}", timeout=30)
    assert wait_healthy(client, 60, config=home.config, since=since) == "port 1 is in use: set [server] port"
    assert client.probes == 0


@pytest.mark.timeout(20)  # the client's own 30 s would run past it
def test_a_probe_of_a_port_that_never_answers_gives_up_at_its_own_timeout(silent_port: int) -> None:
    client = DaemonClient(f"http://127.0.0.1:{silent_port}", timeout=30)
    assert client.is_healthy(0.2) is False


@pytest.mark.timeout(20)
def test_waiting_on_a_silent_port_ends_at_the_deadline_with_no_answer(home: Home, silent_port: int) -> None:
    client = CountingClient(f"http://127.0.0.1:{silent_port}", timeout=30)
    failure = wait_healthy(client, 1.0, config=home.config)
    assert failure == f"no answer from http://127.0.0.1:{silent_port}/health within 1s"
    assert client.probes >= 2  # each probe gave up on its own, and the wait went on
