"""OpenAI's Server-Sent Events framing around a chat or completions encoder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from mlxd.errors import GenerationError
from mlxd.http.dialects import Dialect
from mlxd.http.errors import error_document
from mlxd.http.metrics import Meter
from mlxd.http.pipeline import ChoiceRun, interleaved, metered, usage
from mlxd.output.events import Event, Finish, Usage

DONE = b"data: [DONE]\n\n"


class StreamEncoder(Protocol):
    """What the SSE loop needs of an endpoint's encoder."""

    def opening(self, choices: int) -> bytes: ...

    def frames(self, index: int, events: Sequence[Event]) -> bytes: ...

    def usage_frame(self, usage: Usage) -> bytes: ...


def error_event(message: str) -> bytes:
    """An error after the stream started: one ``data: {"error": ...}`` event (then the stream ends)."""
    return b"data: " + error_document(GenerationError(message), Dialect.OPENAI) + b"\n\n"


async def sse(
    runs: Sequence[ChoiceRun], encoder: StreamEncoder, include_usage: bool, meter: Meter | None = None
) -> AsyncIterator[bytes]:
    """The body: an opening chunk per choice, their chunks as they come, usage, ``[DONE]``."""
    try:
        yield encoder.opening(len(runs))
        remaining = len(runs)
        async for index, events in interleaved(runs):
            if meter is not None:
                meter.first_token()
            last = events[-1]
            if isinstance(last, Finish):
                if last.reason == "error":
                    yield encoder.frames(index, events[:-1]) + error_event(last.error or "generation failed")
                    return
                remaining -= 1
            out = encoder.frames(index, events)
            if not remaining:
                if include_usage:
                    out += encoder.usage_frame(usage(runs))
                out += DONE
            yield out
    finally:
        for run in runs:
            run.stream.cancel()
        metered(runs, meter)
