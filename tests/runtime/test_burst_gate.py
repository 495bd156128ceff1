"""``BurstGate``: admitted requests wait for the rest of their burst, nothing overtakes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

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
    worker.admitting = 1  # b is still being admitted when a is
    gate.send("insert a", hold=True)
    assert worker.received == []
    assert len(gate) == 1
    worker.admitting = 0
    gate.send("insert b", hold=True)
    assert worker.received == ["insert a", "insert b"]
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


def test_the_engine_counts_admissions_not_loads() -> None:
    """Requests waiting for their model to load are not about to start: a request for a loaded
    model is not held for them. Admissions are counted until they end, failed ones too."""
    from mlxd.errors import ContextLengthError
    from mlxd.runtime.requests import ChatPrompt, GenerationRequest
    from mlxd.runtime.specs import ModelSpec
    from tests.fakes import FakeEngine

    def request(source: str, content: str = "hi") -> GenerationRequest:
        return GenerationRequest(
            request_id="r",
            alias=source,
            spec=ModelSpec(source),
            prompt=ChatPrompt(({"role": "user", "content": content},)),
            max_tokens=4,
        )

    async def main() -> None:
        engine = FakeEngine()
        await engine.generate(request("org/loaded"))
        engine.backend.hold = asyncio.Event()
        cold = asyncio.ensure_future(engine.generate(request("org/cold")))
        await asyncio.sleep(0.01)
        assert engine.admitting == 0  # waiting for its load
        admitted = asyncio.ensure_future(engine.admit(request("org/loaded")))
        await asyncio.sleep(0)
        assert engine.admitting == 1  # tokenizing
        await admitted
        assert engine.admitting == 0
        with pytest.raises(ContextLengthError):
            await engine.admit(request("org/loaded", content="word " * 5000))  # refused
        assert engine.admitting == 0
        engine.backend.hold.set()
        await cold
        assert engine.admitting == 0

    asyncio.run(main())
