"""``BurstGate``: admitted requests wait for the rest of their burst, nothing overtakes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from mlxd.runtime.burst_gate import BurstGate


def _in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in an event loop of its own (the gate's timer needs one)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class _Worker:
    """Records what reaches it; ``admitting`` is the engine's count of admissions in flight."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self.admitting = 0

    def gate(self, hold_s: float = 10.0) -> BurstGate[str]:
        return BurstGate(self.received.append, lambda: self.admitting, hold_s)


@_in_loop
async def test_a_request_alone_goes_at_once() -> None:
    worker = _Worker()
    gate = worker.gate()
    gate.send("insert a", hold=True)
    assert worker.received == ["insert a"]
    assert len(gate) == 0


@_in_loop
async def test_a_burst_goes_together_when_its_last_request_is_admitted() -> None:
    worker = _Worker()
    gate = worker.gate()
    worker.admitting = 2
    for name in ("a", "b"):
        worker.admitting -= 1
        gate.send(f"insert {name}", hold=True)
        assert worker.received == [] if name == "a" else ["insert a", "insert b"]
    assert len(gate) == 0


@_in_loop
async def test_nothing_overtakes_a_held_request() -> None:
    worker = _Worker()
    gate = worker.gate()
    worker.admitting = 1
    gate.send("insert a", hold=True)
    gate.send("cancel a")  # its client left while it waited
    gate.send("load b")
    assert worker.received == []
    worker.admitting = 0
    gate.send("insert c", hold=True)
    assert worker.received == ["insert a", "cancel a", "load b", "insert c"]


@_in_loop
async def test_a_failed_last_admission_releases_the_burst() -> None:
    worker = _Worker()
    gate = worker.gate()
    worker.admitting = 1
    gate.send("insert a", hold=True)
    gate.settled()  # still one in flight: nothing moves
    assert worker.received == []
    worker.admitting = 0
    gate.settled()
    assert worker.received == ["insert a"]


@_in_loop
async def test_no_request_waits_longer_than_the_hold() -> None:
    worker = _Worker()
    gate = worker.gate(hold_s=0.02)
    worker.admitting = 5  # a steady stream: admission never pauses
    gate.send("insert a", hold=True)
    gate.send("insert b", hold=True)
    assert worker.received == []
    await asyncio.sleep(0.1)
    assert worker.received == ["insert a", "insert b"]
    gate.send("insert c", hold=True)  # a new hold starts with it
    assert worker.received == ["insert a", "insert b"]
    gate.flush()
    assert worker.received == ["insert a", "insert b", "insert c"]
