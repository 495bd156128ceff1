"""OpenAI's Server-Sent Events framing around a chat or completions encoder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from mlxd.errors import GenerationError
from mlxd.http.dialects import Dialect
from mlxd.http.errors import envelope, http_error
from mlxd.http.metrics import Meter
from mlxd.http.observe import note_stream_error
from mlxd.http.pipeline import ChoiceRun, interleaved, metered, usage
from mlxd.output.events import Event, Finish, Usage

DONE = b"data: [DONE]\n\n"


class StreamEncoder(Protocol):
    """What the SSE loop needs of an endpoint's encoder."""

    def opening(self, choices: int) -> bytes: ...

    def frames(self, index: int, events: Sequence[Event]) -> bytes: ...

    def usage_frame(self, usage: Usage) -> bytes: ...


def error_end(failure: BaseException) -> bytes:
    """How a stream that already started ends on an error: one ``data: {"error": ...}``
    event in the envelope the error map gives it, then ``data: [DONE]``."""
    error = http_error(failure)
    note_stream_error(error.code)
    return b"data: " + envelope(error, Dialect.OPENAI)[1] + b"\n\n" + DONE


async def sse(
    runs: Sequence[ChoiceRun], encoder: StreamEncoder, include_usage: bool, meter: Meter | None = None
) -> AsyncIterator[bytes]:
    """The body: an opening chunk per choice, their chunks as they come, usage, ``[DONE]``.

    A failure after the opening (a choice that fails, the daemon stopping, a bug) ends the
    body with ``error_end``: the client always gets a proper end, never a cut stream.
    """
    try:
        yield encoder.opening(len(runs))
        remaining = len(runs)
        async for index, events in interleaved(runs):
            if meter is not None:
                meter.first_token()
            last = events[-1]
            if isinstance(last, Finish):
                if last.reason == "error":
                    failure = GenerationError(last.error or "generation failed")
                    yield encoder.frames(index, events[:-1]) + error_end(failure)
                    return
                remaining -= 1
            out = encoder.frames(index, events)
            if not remaining:
                if include_usage:
                    out += encoder.usage_frame(usage(runs))
                out += DONE
            yield out
    except Exception as exc:
        yield error_end(exc)
    finally:
        for run in runs:
            run.stream.cancel()
        metered(runs, meter)
