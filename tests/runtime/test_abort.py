"""``Engine.abort``: how a stop ends what the engine still runs (the fake engine over the
real ``EngineCore``, so admission, residency and streams are the daemon's own).

Every admitted stream raises the error after what was ready, requests still waiting for
a model to load fail at once, later admissions fail, and nothing is left counted.
"""

from __future__ import annotations

import asyncio

import pytest

from mlxd.errors import UnavailableError
from mlxd.runtime.requests import ChatPrompt, GenerationRequest
from mlxd.runtime.specs import ModelSpec
from tests.fakes import FakeEngine

STOPPING = UnavailableError("mlxd is shutting down", retry_after=5)


def request(n: int = 1, max_tokens: int = 10_000) -> GenerationRequest:
    return GenerationRequest(
        request_id="r",
        alias="small",
        spec=ModelSpec("org/small"),
        prompt=ChatPrompt(({"role": "user", "content": "hi"},)),
        max_tokens=max_tokens,
        n=n,
    )


def test_running_streams_end_with_the_error_after_what_was_ready() -> None:
    async def main() -> None:
        engine = FakeEngine(token_delay=0.002)
        streams = await engine.generate(request(n=2))
        received = [0, 0]

        async def read(i: int) -> BaseException | None:
            try:
                async for events in streams[i]:
                    received[i] += len(events)
            except UnavailableError as exc:
                return exc
            return None

        readers = [asyncio.ensure_future(read(i)) for i in range(2)]
        while min(received) < 3:
            await asyncio.sleep(0.005)
        assert engine.abort(STOPPING) == 2
        assert await asyncio.gather(*readers) == [STOPPING, STOPPING]
        assert engine.status().active_sequences == 0
        assert not engine._producers  # the "worker" dropped both sequences
        before = list(received)
        await asyncio.sleep(0.02)
        assert received == before  # nothing more was decoded for them
        with pytest.raises(UnavailableError):
            await engine.generate(request())
        assert engine.abort(STOPPING) == 0

    asyncio.run(main())


def test_a_request_waiting_for_its_model_fails_at_once_and_the_load_goes_on() -> None:
    async def main() -> None:
        engine = FakeEngine()
        engine.backend.hold = asyncio.Event()
        waiting = asyncio.ensure_future(engine.generate(request()))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        assert engine.status().active_sequences == 1
        engine.abort(STOPPING)
        with pytest.raises(UnavailableError):
            await asyncio.wait_for(waiting, 1.0)
        assert engine.status().active_sequences == 0
        engine.backend.hold.set()  # the load itself finishes (and stays for the next start)
        await engine.residency.settle()
        assert engine.backend.calls == [("load", "org/small")]

    asyncio.run(main())
