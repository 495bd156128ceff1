"""The control channel between ``mlxd serve`` (the launcher) and its ranks: liveness, not data.

The ranks' data goes over ``mx.distributed``, whose collectives wait forever for a rank
that stopped; so every rank also keeps a TCP connection to the launcher, one JSON object
per line, and both ends send a heartbeat every second. The launcher knows at once when a
rank's process dies (its connection closes) and within ``timeout`` when one stops
answering (no heartbeat), and names it; a rank that loses the launcher ends itself, so
no rank outlives the daemon on any machine.

Silence is measured by the socket's own receive timeout, not by a thread watching a
clock: ``mx.distributed.init`` holds Python's GIL while the ranks connect, which freezes
every thread of its process for seconds, and a watcher thread waking up after such a
freeze would find its clock stale although the heartbeats are waiting in the socket.
A rank is held to the heartbeat timeout once it has joined; before, to the start timeout.

Messages, rank to launcher: ``hello`` (rank, pid, token), ``joined`` (``mx.distributed``
is up), ``beat``, ``bye`` (code, reason). Launcher to rank: ``beat``, and to rank 0
``ranks`` (how many are up) and ``fail`` (reason: another rank is gone).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mlxd.cluster")

#: Seconds between two heartbeats.
BEAT_S = 1.0


class Link:
    """One end of a connection: JSON lines out (thread-safe), JSON lines in."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._reader = sock.makefile("rb")

    def send(self, message: dict[str, Any]) -> bool:
        """Send one message; False when the connection is gone."""
        data = (json.dumps(message) + "\n").encode()
        try:
            with self._lock:
                self.sock.sendall(data)
        except OSError:
            return False
        return True

    def receive(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next message, or None at the end (closed, broken, or not our protocol);
        raises ``TimeoutError`` when nothing arrived for ``timeout`` seconds."""
        try:
            self.sock.settimeout(timeout)
            line = self._reader.readline(65536)
        except TimeoutError:
            raise
        except (OSError, ValueError):
            return None
        if not line:
            return None
        try:
            message = json.loads(line)
        except ValueError:
            return None
        return message if isinstance(message, dict) else None

    def close(self) -> None:
        """Close both directions (a reader blocked on it returns None)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass(frozen=True)
class Event:
    """What the launcher learns about a rank: ``hello``, ``joined``, ``bye`` or ``lost``."""

    kind: str
    rank: int
    pid: int = 0
    code: int = 0
    reason: str = ""


class ControlServer:
    """The launcher's end: accepts one connection per rank and reports ``Event``s."""

    def __init__(self, address: str, size: int, token: str, timeout: float, start_timeout: float) -> None:
        self.size = size
        self.events: queue.Queue[Event] = queue.Queue()
        self._token = token
        self._timeout = timeout
        self._start_timeout = start_timeout
        self._links: dict[int, Link] = {}
        self._done: set[int] = set()  # said bye, or reported lost
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._sock = socket.create_server((address, 0))
        self.port: int = self._sock.getsockname()[1]
        for target, name in ((self._accept, "accept"), (self._beat, "beat")):
            threading.Thread(target=target, name=f"mlxd-control-{name}", daemon=True).start()

    def send(self, rank: int, message: dict[str, Any]) -> None:
        """Send to a rank if it is connected."""
        with self._lock:
            link = self._links.get(rank)
        if link is not None:
            link.send(message)

    def close(self) -> None:
        """Stop: every rank still connected loses the launcher (and ends itself)."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            links = list(self._links.values())
        for link in links:
            link.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(Link(sock),), daemon=True).start()

    def _hello(self, link: Link) -> int | None:
        """The rank a new connection speaks for, if it is one of ours and not connected yet."""
        try:
            hello = link.receive(self._timeout)
        except TimeoutError:
            return None
        if hello is None or hello.get("t") != "hello" or hello.get("token") != self._token:
            return None
        rank = hello.get("rank")
        if not isinstance(rank, int) or not 0 <= rank < self.size:
            return None
        with self._lock:
            if rank in self._links:
                return None
            self._links[rank] = link
        self.events.put(Event("hello", rank, pid=int(hello.get("pid") or 0)))
        return rank

    def _serve(self, link: Link) -> None:
        rank = self._hello(link)
        if rank is None:
            link.close()
            return
        timeout, reason = self._start_timeout, "exited"
        while True:
            try:
                message = link.receive(timeout)
            except TimeoutError:
                reason = f"stopped answering (silent for {timeout:g}s)"
                break
            if message is None:
                break
            kind = message.get("t")
            if kind == "joined":
                timeout = self._timeout
                self.events.put(Event("joined", rank))
            elif kind == "bye":
                code, said = int(message.get("code") or 0), str(message.get("reason") or "")
                self._finish(rank, Event("bye", rank, code=code, reason=said))
        self._finish(rank, Event("lost", rank, reason=reason))
        link.close()

    def _finish(self, rank: int, event: Event) -> None:
        with self._lock:
            if rank in self._done:
                return
            self._done.add(rank)
        self.events.put(event)

    def _beat(self) -> None:
        while not self._closed.wait(BEAT_S):
            with self._lock:
                links = list(self._links.values())
            for link in links:
                link.send({"t": "beat"})


class ControlClient:
    """A rank's end: says hello, beats, and calls ``on_lost`` when the launcher is gone.

    ``on_fail`` gets the launcher's ``fail`` reasons (rank 0: another rank is gone)."""

    def __init__(self, address: tuple[str, int], rank: int, token: str, timeout: float) -> None:
        self.rank = rank
        self.ranks_up = 0
        self._address = address
        self._token = token
        self._timeout = timeout
        self._link: Link | None = None
        self._closed = threading.Event()
        self._on_lost: Callable[[str], None] = lambda reason: None
        self._on_fail: Callable[[str], None] = lambda reason: None

    def connect(self, deadline: float) -> None:
        """Reach the launcher (retrying until ``deadline``, a ``time.monotonic()``) and say hello."""
        while True:
            try:
                sock = socket.create_connection(
                    self._address, timeout=max(0.1, min(5.0, deadline - time.monotonic()))
                )
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._link = Link(sock)
        self._link.send({"t": "hello", "rank": self.rank, "pid": os.getpid(), "token": self._token})

    def start(self, on_lost: Callable[[str], None], on_fail: Callable[[str], None] | None = None) -> None:
        """Beat and listen on background threads from now on."""
        self._on_lost = on_lost
        if on_fail is not None:
            self._on_fail = on_fail
        for target, name in ((self._listen, "listen"), (self._beat, "beat")):
            threading.Thread(target=target, name=f"mlxd-control-{name}", daemon=True).start()

    def joined(self) -> None:
        """Tell the launcher this rank is in ``mx.distributed``."""
        if self._link is not None:
            self._link.send({"t": "joined"})

    def bye(self, code: int, reason: str = "") -> None:
        """Tell the launcher this rank is ending and why (0: asked to), then hang up."""
        if self._closed.is_set():
            return
        self._closed.set()
        link = self._link
        if link is not None:
            link.send({"t": "bye", "code": code, "reason": reason})
            link.close()

    def _listen(self) -> None:
        link = self._link
        assert link is not None
        reason = "lost the connection to the launcher (mlxd serve)"
        while True:
            try:
                message = link.receive(self._timeout)
            except TimeoutError:
                reason = f"the launcher (mlxd serve) stopped answering for {self._timeout:g}s"
                break
            if message is None:
                break
            kind = message.get("t")
            if kind == "ranks":
                self.ranks_up = int(message.get("up") or 0)
            elif kind == "fail":
                self._on_fail(str(message.get("reason") or "another rank failed"))
        if not self._closed.is_set():
            self._on_lost(reason)

    def _beat(self) -> None:
        link = self._link
        assert link is not None
        while not self._closed.wait(BEAT_S):
            link.send({"t": "beat"})
