"""The OpenAI-compatible routes: chat and text completions, models."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.response import Stream

from mlxd.errors import GenerationError, ModelNotFoundError
from mlxd.http.body import StrictBody
from mlxd.http.dialects.openai.chat import ChatEncoder
from mlxd.http.dialects.openai.completions import CompletionEncoder
from mlxd.http.dialects.openai.stream import sse
from mlxd.http.pipeline import ChoiceRun, collect, metered, usage
from mlxd.http.state import DaemonState
from mlxd.http.translate import translate
from mlxd.protocol.requests import AnyRequest, ChatCompletionRequest, CompletionRequest
from mlxd.protocol.responses import ModelCard, ModelList

log = logging.getLogger("mlxd.prompts")
_JSON = "application/json"
_LOGGED_CHARS = 2000
#: Not a status a client sees (it has gone); the access log and /metrics count it.
CLIENT_CLOSED = 499


def _clip(value: object) -> str:
    """A prompt or output for the log (only with ``log_prompts``), cut to a sane length."""
    text = repr(value)
    return text if len(text) <= _LOGGED_CHARS else text[:_LOGGED_CHARS] + "…"


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _wait_disconnect(receive: Callable[[], Awaitable[Any]]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def openai_router(state: DaemonState) -> Router:
    """``/v1`` routes bound to the daemon's state."""

    async def complete(
        request: Request[Any, Any, Any], body: AnyRequest, chat: bool
    ) -> Response[bytes] | Stream:
        config = state.configs.current
        generation, shape = translate(body, config)
        if config.server.log_prompts:
            log.info("prompt for %s: %s", generation.alias, _clip(generation.prompt))
        streams = await state.engine.generate(generation)
        runs = [ChoiceRun(i, stream) for i, stream in enumerate(streams)]
        encoder: ChatEncoder | CompletionEncoder = (
            ChatEncoder(generation.alias, shape.logprobs)
            if chat
            else CompletionEncoder(generation.alias, shape.logprobs, shape.echo)
        )
        meter = state.metrics.meter(generation.alias) if state.metrics is not None else None
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = sse(runs, encoder, include_usage, meter)
            return Stream(events, media_type="text/event-stream", headers=_SSE_HEADERS)
        # Not streaming: still stop generating the moment the client leaves.
        gather = asyncio.ensure_future(asyncio.gather(*[collect(run, meter) for run in runs]))
        gone = asyncio.ensure_future(_wait_disconnect(request.receive))
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
            return Response(b"", status_code=CLIENT_CLOSED)  # nobody is listening any more
        outputs = gather.result()
        for output in outputs:
            if output.finish.reason == "error":
                raise GenerationError(f"generation failed: {output.finish.error}")
        if config.server.log_prompts:
            log.info("output: %s", _clip([o.text for o in outputs]))
        return Response(msgspec.json.encode(encoder.response(outputs, usage(runs))), media_type=_JSON)

    @post("/chat/completions", status_code=200, dto=StrictBody[ChatCompletionRequest], return_dto=None)
    async def chat_completions(
        request: Request[Any, Any, Any], data: ChatCompletionRequest
    ) -> Response[bytes] | Stream:
        """OpenAI chat completions, streaming or not."""
        return await complete(request, data, chat=True)

    @post("/completions", status_code=200, dto=StrictBody[CompletionRequest], return_dto=None)
    async def completions(
        request: Request[Any, Any, Any], data: CompletionRequest
    ) -> Response[bytes] | Stream:
        """OpenAI text completions, streaming or not."""
        return await complete(request, data, chat=False)

    def cards() -> list[ModelCard]:
        config = state.configs.current
        created = int(state.started_at)
        out = []
        for alias, model in config.models.items():
            for name in (alias, *model.aliases):
                out.append(ModelCard(id=name, created=created, source=model.source))
        return out

    @get("/models")
    async def list_models() -> Response[bytes]:
        """The configured aliases (and their extra names)."""
        return Response(msgspec.json.encode(ModelList(cards())), media_type=_JSON)

    @get("/models/{model_id:path}")
    async def get_model(model_id: str) -> Response[bytes]:
        """One model by any name a request may use: an alias, one of its ``aliases``, or
        the repo id of a configured alias (``/`` raw or percent-encoded, as the SDKs send it)."""
        name = model_id.strip("/")
        config = state.configs.current
        alias = config.find_alias(name) if name else None
        if alias is None:
            raise ModelNotFoundError(
                f"the model {name!r} does not exist; GET /v1/models lists the configured ones"
            )
        card = ModelCard(id=name, created=int(state.started_at), source=config.models[alias].source)
        return Response(msgspec.json.encode(card), media_type=_JSON)

    return Router(path="/v1", route_handlers=[chat_completions, completions, list_models, get_model])
