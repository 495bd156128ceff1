"""The OpenAI-compatible routes: chat and text completions, models."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.response import Stream

from mlxd.errors import GenerationError, ModelNotFoundError
from mlxd.http.rendering import Renderer, collect, sse
from mlxd.http.state import DaemonState
from mlxd.http.translate import resolve_alias, translate
from mlxd.protocol.requests import AnyRequest, ChatCompletionRequest, CompletionRequest
from mlxd.protocol.responses import ModelCard, ModelList

_JSON = "application/json"
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
        stream = await state.engine.generate(generation)
        renderer = Renderer(chat=chat, model=generation.alias, logprobs=shape.logprobs, echo=shape.echo)
        meter = state.metrics.meter(generation.alias) if state.metrics is not None else None
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return Stream(
                sse(stream, renderer, include_usage, meter),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        # Not streaming: still stop generating the moment the client leaves.
        gather = asyncio.ensure_future(collect(stream, shape.logprobs is not None, meter))
        gone = asyncio.ensure_future(_wait_disconnect(request.receive))
        try:
            await asyncio.wait((gather, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not gather.done():
                stream.cancel()
                gather.cancel()
        if not gather.done() or gather.cancelled():
            return Response(b"", status_code=499)  # nobody is listening any more
        result = gather.result()
        if result.error is not None:
            raise GenerationError(f"generation failed: {result.error}")
        usage = renderer.usage(stream, result.completion_tokens)
        payload = renderer.complete(result.text, result.tokens, result.finish_reason, usage)
        return Response(msgspec.json.encode(payload), media_type=_JSON)

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
