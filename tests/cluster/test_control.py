"""The control channel on loopback: what the launcher learns about ranks, and what ranks
learn about the launcher (real sockets, short timeouts, no MLX)."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mlxd.cluster.control import ControlClient, ControlServer, Event

TOKEN = "secret-token"


@pytest.fixture
def server() -> Iterator[ControlServer]:
    control = ControlServer("127.0.0.1", 2, TOKEN, timeout=1.5, start_timeout=3.0)
    try:
        yield control
    finally:
        control.close()


def next_event(server: ControlServer, timeout: float = 5.0) -> Event:
    return server.events.get(timeout=timeout)


def client(server: ControlServer, rank: int, token: str = TOKEN) -> ControlClient:
    member = ControlClient(("127.0.0.1", server.port), rank, token, timeout=1.5)
    member.connect(time.monotonic() + 5)
    return member


def test_a_rank_says_hello_joins_and_leaves_cleanly(server: ControlServer) -> None:
    member = client(server, 1)
    lost: list[str] = []
    member.start(on_lost=lost.append)
    hello = next_event(server)
    assert (hello.kind, hello.rank) == ("hello", 1)
    assert hello.pid > 0
    member.joined()
    assert next_event(server) == Event("joined", 1)
    member.bye(0)
    assert next_event(server) == Event("bye", 1, code=0)
    with pytest.raises(queue.Empty):  # the closed connection is no second event
        server.events.get(timeout=0.5)
    assert lost == []  # a rank that said bye does not report losing the launcher


def test_a_rank_whose_connection_drops_is_lost_at_once(server: ControlServer) -> None:
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall((json.dumps({"t": "hello", "rank": 0, "pid": 42, "token": TOKEN}) + "\n").encode())
    assert next_event(server) == Event("hello", 0, pid=42)
    started = time.monotonic()
    raw.close()  # what a killed process's kernel does
    assert next_event(server) == Event("lost", 0, reason="exited")
    assert time.monotonic() - started < 1.0


def test_a_joined_rank_that_goes_silent_is_lost_after_the_heartbeat_timeout(server: ControlServer) -> None:
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall((json.dumps({"t": "hello", "rank": 1, "pid": 7, "token": TOKEN}) + "\n").encode())
    assert next_event(server).kind == "hello"
    joined_at = time.monotonic()  # before the server can have read "joined": a lower bound
    raw.sendall(b'{"t": "joined"}\n')
    assert next_event(server) == Event("joined", 1)
    lost = next_event(server)  # then nothing: a stopped process
    assert (lost.kind, lost.rank) == ("lost", 1)
    assert "stopped answering (silent for 1.5s)" in lost.reason
    assert 1.5 <= time.monotonic() - joined_at < 4.5
    raw.close()


def test_before_joining_a_rank_is_held_to_the_start_timeout(server: ControlServer) -> None:
    """``mx.distributed.init`` freezes a rank's threads while the ranks connect: the
    heartbeat timeout applies only once it has joined."""
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall((json.dumps({"t": "hello", "rank": 1, "pid": 7, "token": TOKEN}) + "\n").encode())
    assert next_event(server).kind == "hello"
    with pytest.raises(queue.Empty):
        server.events.get(timeout=2.0)  # longer than the heartbeat timeout
    lost = next_event(server)
    assert "silent for 3s" in lost.reason
    raw.close()


@pytest.mark.parametrize(
    "hello",
    [
        {"t": "hello", "rank": 1, "pid": 1, "token": "wrong"},
        {"t": "hello", "rank": 5, "pid": 1, "token": TOKEN},
        {"t": "beat"},
    ],
)
def test_strangers_are_hung_up_on(server: ControlServer, hello: dict[str, object]) -> None:
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.settimeout(5)
    raw.sendall((json.dumps(hello) + "\n").encode())
    assert raw.recv(100) == b""  # closed without a word
    raw.close()
    with pytest.raises(queue.Empty):
        server.events.get(timeout=0.3)


def test_rank_zero_hears_how_many_ranks_are_up_and_why_to_fail(server: ControlServer) -> None:
    member = client(server, 0)
    failures: list[str] = []
    member.start(on_lost=failures.append, on_fail=failures.append)
    assert next_event(server).kind == "hello"
    server.send(0, {"t": "ranks", "up": 2})
    server.send(0, {"t": "fail", "reason": "rank 1 (10.0.0.2) exited"})
    deadline = time.monotonic() + 5
    while not failures and time.monotonic() < deadline:
        time.sleep(0.02)
    assert failures == ["rank 1 (10.0.0.2) exited"]
    assert member.ranks_up == 2
    member.bye(0)


def test_a_rank_that_loses_the_launcher_is_told(server: ControlServer) -> None:
    member = client(server, 1)
    lost = threading.Event()
    reasons: list[str] = []
    member.start(on_lost=lambda reason: (reasons.append(reason), lost.set()))
    assert next_event(server).kind == "hello"
    server.close()
    assert lost.wait(5)
    assert reasons == ["lost the connection to the launcher (mlxd serve)"]


def test_a_rank_is_told_when_the_launcher_stops_answering() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    member = ControlClient(("127.0.0.1", listener.getsockname()[1]), 1, TOKEN, timeout=1.0)
    member.connect(time.monotonic() + 5)
    accepted, _ = listener.accept()  # a launcher that never says a word again
    lost = threading.Event()
    reasons: list[str] = []
    member.start(on_lost=lambda reason: (reasons.append(reason), lost.set()))
    assert lost.wait(5)
    assert reasons == ["the launcher (mlxd serve) stopped answering for 1s"]
    accepted.close()
    listener.close()


def test_connecting_gives_up_at_the_deadline() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    member = ControlClient(("127.0.0.1", port), 1, TOKEN, timeout=1.0)
    with pytest.raises(OSError):
        member.connect(time.monotonic() + 0.5)
