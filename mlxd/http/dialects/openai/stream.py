"""OpenAI's Server-Sent Events framing around a chat or completions encoder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from mlxd.errors import GenerationError
from mlxd.http.dialects import Dialect
from mlxd.http.errors import error_document
from mlxd.http.generation import Generation, streamed
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


async def sse(generation: Generation, encoder: StreamEncoder, include_usage: bool) -> AsyncIterator[bytes]:
    """The body: an opening chunk per choice, their chunks as they come, usage, ``[DONE]``."""
    yield encoder.opening(len(generation.runs))
    remaining = len(generation.runs)
    async for index, events in streamed(generation):
        last = events[-1]
        if isinstance(last, Finish):
            if last.reason == "error":
                yield encoder.frames(index, events[:-1]) + error_event(last.error or "generation failed")
                return
            remaining -= 1
        out = encoder.frames(index, events)
        if not remaining:
            if include_usage:
                out += encoder.usage_frame(generation.usage())
            out += DONE
        yield out
