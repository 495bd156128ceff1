"""The HTTP side of the output pipeline: engine streams through per-choice parsers.

Each choice of a request is a ``ChoiceRun``: the engine's stream of decoded text, fed to
a ``ChoiceParser`` that turns it into typed events. Every dialect's encoder consumes
those events, streaming (``events``, ``interleaved``) or whole (``collect``), so
reasoning and tool calls are cut in one place for all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from mlxd.http.metrics import Meter
from mlxd.output.collect import ChoiceOutput, Collector
from mlxd.output.events import Event, Usage
from mlxd.output.parser import ChoiceParser, OutputSpec
from mlxd.runtime.engine import GenerationStream


class ChoiceRun:
    """One choice of a request: its engine stream and the parser of its output."""

    __slots__ = ("completion_tokens", "index", "parser", "stream")

    def __init__(self, index: int, stream: GenerationStream, spec: OutputSpec) -> None:
        self.index = index
        self.stream = stream
        self.parser = ChoiceParser(spec, reasoning=stream.reasoning_format, tool_format=stream.tool_format)
        self.completion_tokens = 0

    async def events(self) -> AsyncIterator[list[Event]]:
        """The choice's events, one list per delivery of the engine; the last ends with ``Finish``."""
        stream, parser = self.stream, self.parser
        try:
            async for batch in stream:
                last = batch[-1]
                if len(batch) == 1:
                    text, tokens = last.text, last.tokens
                else:
                    text = "".join([e.text for e in batch])
                    tokens = [t for e in batch if e.tokens for t in e.tokens] or None
                self.completion_tokens = last.completion_tokens
                events = parser.feed(text, tokens)
                if last.finish_reason is not None:
                    events += parser.finish(last.finish_reason, last.completion_tokens, last.error)
                elif parser.done:
                    # A stop string or the last allowed tool call: no more tokens are needed.
                    stream.cancel()
                    events += parser.finish("stop", last.completion_tokens)
                if events:
                    yield events
                if parser.done:
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
