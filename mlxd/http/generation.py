"""A resolved request on the engine, as every dialect's route runs it.

``start`` hands the ``GenerationRequest`` to the engine and wraps each choice in a
``ChoiceRun``; ``whole`` gathers the choices for a non-streaming answer and stops
generating the moment the client hangs up; ``streamed`` yields the choices' events for
a dialect's stream framing and always frees the sequences and records the metrics.
One path for all dialects, so cancellation, metrics and prompt logging hold in each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from litestar import Request

from mlxd.errors import MlxdError
from mlxd.http.errors import stream_failure
from mlxd.http.images import fetch
from mlxd.http.metrics import Meter
from mlxd.http.observe import note_stream_error
from mlxd.http.pipeline import ChoiceRun, collect, interleaved, metered, usage
from mlxd.http.state import DaemonState
from mlxd.http.translate import dialect_names
from mlxd.output.collect import ChoiceOutput
from mlxd.output.events import Event, Finish, Usage
from mlxd.runtime.requests import GenerationRequest

log = logging.getLogger("mlxd.prompts")
_LOGGED_CHARS = 2000
#: Not a status a client sees (it has gone); the access log and /metrics count it.
CLIENT_CLOSED = 499
#: Headers of every event stream (no proxy buffering).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _clip(value: object) -> str:
    """A prompt or output for the log (only with ``log_prompts``), cut to a sane length."""
    text = repr(value)
    return text if len(text) <= _LOGGED_CHARS else text[:_LOGGED_CHARS] + "…"


@dataclass(slots=True)
class Generation:
    """A request admitted by the engine: its choices and its metrics."""

    alias: str
    runs: list[ChoiceRun]
    meter: Meter | None = None
    log_prompts: bool = False

    def usage(self) -> Usage:
        """The request's token counts so far."""
        return usage(self.runs)


async def start(
    state: DaemonState, request: GenerationRequest, names: Mapping[str, str] | None = None
) -> Generation:
    """Admit the request (the engine raises the error its client should get, naming the
    field as the dialect's ``names`` spell it)."""
    config = state.configs.current
    log_prompts = config.server.log_prompts
    if log_prompts:
        log.info("prompt for %s: %s", request.alias, _clip(request.prompt))
    with dialect_names(names or {}):
        request = await fetch(request, config)
        streams = await state.engine.generate(request)
    runs = [ChoiceRun(i, stream) for i, stream in enumerate(streams)]
    meter = state.metrics.meter(request.alias) if state.metrics is not None else None
    return Generation(request.alias, runs, meter, log_prompts)


async def _wait_disconnect(receive: Callable[[], Awaitable[Any]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def whole(http: Request[Any, Any, Any], generation: Generation) -> list[ChoiceOutput] | None:
    """Every choice, complete; ``None`` when the client left first (generation stopped).

    Raises:
        GenerationError: a choice failed.
    """
    runs, meter = generation.runs, generation.meter
    gather = asyncio.ensure_future(asyncio.gather(*[collect(run, meter) for run in runs]))
    gone = asyncio.ensure_future(_wait_disconnect(http.receive))
    left = True
    try:
        await asyncio.wait((gather, gone), return_when=asyncio.FIRST_COMPLETED)
        left = not gather.done()
    finally:
        gone.cancel()
        if left:
            for run in runs:
                run.stream.cancel()
            gather.cancel()
            # A cancelled gather ends with CancelledError as its *exception*: consume it here.
            with contextlib.suppress(asyncio.CancelledError):
                await gather
        metered(runs, meter)
    if left:
        return None
    outputs: list[ChoiceOutput] = gather.result()
    for output in outputs:
        if output.finish.reason == "error":
            raise stream_failure(f"generation failed: {output.finish.error}", output.finish.code)
    if generation.log_prompts:
        log.info("output: %s", _clip([o.text for o in outputs]))
    return outputs


async def streamed(generation: Generation) -> AsyncIterator[tuple[int, list[Event]]]:
    """The choices' events as they come, tagged with the choice's index; when the
    iteration ends, however it ends, the sequences are freed and the metrics recorded.

    A failure after the start (the engine ending the sequences because the daemon stops, a
    bug) comes out as a ``Finish`` with reason ``error`` and the error's code, so every
    dialect ends its stream with its own error event, never a cut connection; the access
    log and ``/metrics`` note the error beside the 200 already sent.
    """
    runs, meter = generation.runs, generation.meter
    finished: set[int] = set()
    try:
        async for index, events in interleaved(runs):
            if meter is not None:
                meter.first_token()
            last = events[-1]
            if isinstance(last, Finish):
                finished.add(index)
                if last.reason == "error":
                    note_stream_error(last.code or "internal_error")
            yield index, events
    except Exception as exc:
        if not isinstance(exc, MlxdError):
            log.exception("a stream failed")
        error = exc if isinstance(exc, MlxdError) else MlxdError("internal error; the daemon keeps serving")
        note_stream_error(error.code)
        index = next((run.index for run in runs if run.index not in finished), 0)
        tokens = runs[index].completion_tokens if index < len(runs) else 0
        yield index, [Finish("error", tokens, error.message, code=error.code)]
    finally:
        for run in runs:
            run.stream.cancel()
        metered(runs, meter)
