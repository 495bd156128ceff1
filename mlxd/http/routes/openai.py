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
from mlxd.http.rendering import Renderer, collect, sse, sse_choices
from mlxd.http.state import DaemonState
from mlxd.http.translate import resolve_alias, translate
from mlxd.protocol.requests import AnyRequest, ChatCompletionRequest, CompletionRequest
from mlxd.protocol.responses import ModelCard, ModelList

log = logging.getLogger("mlxd.prompts")
_JSON = "application/json"
_LOGGED_CHARS = 2000


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
        tools = getattr(body, "tools", None)
        renderer = Renderer(
            chat=chat, model=generation.alias, logprobs=shape.logprobs, echo=shape.echo, tools=tools
        )
        meter = state.metrics.meter(generation.alias) if state.metrics is not None else None
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            if len(streams) == 1:
                events = sse(streams[0], renderer, include_usage, meter)
            else:
                events = sse_choices(streams, renderer, include_usage, meter)
            return Stream(events, media_type="text/event-stream", headers=_SSE_HEADERS)
        # Not streaming: still stop generating the moment the client leaves.
        want = shape.logprobs is not None
        gather = asyncio.ensure_future(
            asyncio.gather(*[collect(s, want, meter, first_choice=i == 0) for i, s in enumerate(streams)])
        )
        gone = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            await asyncio.wait((gather, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not gather.done():
                for stream in streams:
                    stream.cancel()
                gather.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await gather
        if not gather.done() or gather.cancelled():
            return Response(b"", status_code=499)  # nobody is listening any more
        results = gather.result()
        for result in results:
            if result.error is not None:
                raise GenerationError(f"generation failed: {result.error}")
        if config.server.log_prompts:
            log.info("output: %s", _clip([r.text for r in results]))
        usage = renderer.usage(streams[0], sum(r.completion_tokens for r in results))
        return Response(msgspec.json.encode(renderer.complete(results, usage)), media_type=_JSON)

    @post("/chat/completions", status_code=200)
    async def chat_completions(
        request: Request[Any, Any, Any], data: ChatCompletionRequest
    ) -> Response[bytes] | Stream:
        """OpenAI chat completions, streaming or not."""
        return await complete(request, data, chat=True)

    @post("/completions", status_code=200)
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

    @get("/models/{model_id:str}")
    async def get_model(model_id: str) -> Response[bytes]:
        """One configured alias."""
        alias = resolve_alias(state.configs.current, model_id) if model_id else None
        for card in cards():
            if card.id == model_id or card.id == alias:
                return Response(msgspec.json.encode(card), media_type=_JSON)
        raise ModelNotFoundError(f"the model {model_id!r} does not exist")

    return Router(path="/v1", route_handlers=[chat_completions, completions, list_models, get_model])
