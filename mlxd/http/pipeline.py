"""The HTTP side of the output pipeline: each choice's typed events, as the engine delivers them.

Each choice of a request is a ``ChoiceRun`` over its engine stream. The stream already
carries typed events (the choice's output parser runs on the MLX worker, where stop
strings, reasoning and tool calls are cut in one place for every dialect), so a run only
counts tokens and hands the events on. Every dialect's encoder consumes them, streaming
(``events``, ``interleaved``) or whole (``collect``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from mlxd.http.metrics import Meter
from mlxd.output.collect import ChoiceOutput, Collector
from mlxd.output.events import Event, Usage
from mlxd.runtime.engine import GenerationStream


class ChoiceRun:
    """One choice of a request: its engine stream, and the tokens it has generated so far."""

    __slots__ = ("completion_tokens", "index", "stream")

    def __init__(self, index: int, stream: GenerationStream) -> None:
        self.index = index
        self.stream = stream
        self.completion_tokens = 0

    async def events(self) -> AsyncIterator[list[Event]]:
        """The choice's events, one list per wake-up of the stream; the last ends with ``Finish``."""
        stream = self.stream
        try:
            async for deliveries in stream:
                last = deliveries[-1]
                self.completion_tokens = last.completion_tokens
                events = last.events if len(deliveries) == 1 else [e for d in deliveries for e in d.events]
                if events:
                    yield events
                if last.finish is not None:
                    return
        finally:
            stream.cancel()


def usage(runs: Sequence[ChoiceRun]) -> Usage:
    """The request's token counts: its one prompt, and every choice's output."""
    first = runs[0].stream
    return Usage(first.prompt_tokens, sum(r.completion_tokens for r in runs), first.cached_tokens)


async def interleaved(runs: Sequence[ChoiceRun]) -> AsyncIterator[tuple[int, list[Event]]]:
    """Several choices' events as they come, each tagged with its choice's index."""
    if len(runs) == 1:
        async for events in runs[0].events():
            yield 0, events
        return
    ready: asyncio.Queue[tuple[int, list[Event]] | Exception | None] = asyncio.Queue()

    async def pump(run: ChoiceRun) -> None:
        try:
            async for events in run.events():
                ready.put_nowait((run.index, events))
        except Exception as exc:  # e.g. the daemon stopping: the reader raises it
            ready.put_nowait(exc)
        finally:
            ready.put_nowait(None)

    pumps = [asyncio.ensure_future(pump(run)) for run in runs]
    try:
        remaining = len(runs)
        while remaining:
            item = await ready.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        for task in pumps:
            task.cancel()


async def collect(run: ChoiceRun, meter: Meter | None = None) -> ChoiceOutput:
    """A whole choice, for a non-streaming response."""
    collector = Collector()
    async for events in run.events():
        if meter is not None:
            meter.first_token()
        collector.add(events)
    return collector.result()


def metered(runs: Sequence[ChoiceRun], meter: Meter | None) -> None:
    """Record the request's token counts once it is over (the prompt counts once)."""
    if meter is not None:
        for run in runs:
            meter.done(run.stream.prompt_tokens if run.index == 0 else 0, run.completion_tokens)
