"""The per-sequence async stream: the worker puts deliveries in, the HTTP layer iterates them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from mlxd.errors import MlxdError
from mlxd.runtime.engine import GenerationEvent


class Stream:
    """One admitted sequence (a ``GenerationStream``).

    Iterating yields every event that is ready at once, so a client that fell behind
    catches up in one write instead of one per token. ``cancel`` (the client left) tells
    the worker to drop the sequence; ``fail`` does too, and its reader then gets what was
    ready followed by the error, raised. Either way ``on_end`` runs once, when the
    sequence is over for the runtime's bookkeeping.
    """

    __slots__ = (
        "_buffer",
        "_done",
        "_failure",
        "_loop",
        "_on_cancel",
        "_on_end",
        "_waiter",
        "cached_tokens",
        "prompt_tokens",
        "seq_id",
    )

    def __init__(
        self,
        seq_id: int,
        prompt_tokens: int,
        on_cancel: Callable[[int], None],
        on_end: Callable[[], None],
    ) -> None:
        self._buffer: list[GenerationEvent] = []
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()  # looked up once: it costs a syscall
        self._done = False
        self._failure: MlxdError | None = None
        self._on_cancel = on_cancel
        self._on_end = on_end
        self.seq_id = seq_id
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = 0

    def put(self, delivery: GenerationEvent) -> None:
        """Called on the event loop by the worker's per-step delivery."""
        if self._done:
            return
        self._buffer.append(delivery)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def __aiter__(self) -> AsyncIterator[list[GenerationEvent]]:
        try:
            while True:
                if not self._buffer:
                    if self._failure is not None:
                        raise self._failure
                    self._waiter = self._loop.create_future()
                    await self._waiter
                    self._waiter = None
                    continue
                events, self._buffer = self._buffer, []
                final = events[-1].finish is not None
                if final:
                    self._finish()
                yield events
                if final:
                    return
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Free the sequence's slot now (the client left or stopped reading)."""
        if not self._done:
            self._on_cancel(self.seq_id)
            self._finish()

    def fail(self, error: MlxdError) -> None:
        """End the sequence with ``error`` (the daemon is stopping): the worker drops it,
        and its reader gets the events that were ready, then ``error`` raised."""
        if self._done:
            return
        self._failure = error
        self.cancel()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._on_end()
