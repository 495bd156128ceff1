"""OpenAI's Server-Sent Events framing around a chat or completions encoder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from mlxd.http.dialects import Dialect
from mlxd.http.errors import error_document, stream_failure
from mlxd.http.generation import Generation, streamed
from mlxd.output.events import Event, Finish, Usage

DONE = b"data: [DONE]\n\n"


class StreamEncoder(Protocol):
    """What the SSE loop needs of an endpoint's encoder."""

    def opening(self, choices: int) -> bytes: ...

    def frames(self, index: int, events: Sequence[Event]) -> bytes: ...

    def usage_frame(self, usage: Usage) -> bytes: ...


def error_end(finish: Finish) -> bytes:
    """How a stream that already started ends on an error: one ``data: {"error": ...}``
    event in the envelope the error map gives it, then ``data: [DONE]``."""
    failure = stream_failure(finish.error, finish.code)
    return b"data: " + error_document(failure, Dialect.OPENAI) + b"\n\n" + DONE


async def sse(generation: Generation, encoder: StreamEncoder, include_usage: bool) -> AsyncIterator[bytes]:
    """The body: an opening chunk per choice, their chunks as they come, usage, ``[DONE]``.

    A failure after the opening (a choice that fails, the daemon stopping, a bug) ends the
    body with ``error_end``: the client always gets a proper end, never a cut stream.
    """
    yield encoder.opening(len(generation.runs))
    remaining = len(generation.runs)
    async for index, events in streamed(generation):
        last = events[-1]
        if isinstance(last, Finish):
            if last.reason == "error":
                yield encoder.frames(index, events[:-1]) + error_end(last)
                return
            remaining -= 1
        out = encoder.frames(index, events)
        if not remaining:
            if include_usage:
                out += encoder.usage_frame(generation.usage())
            out += DONE
        yield out
