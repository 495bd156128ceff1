"""The OpenAI-compatible routes: chat and text completions, models."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.response import Stream

from mlxd.config.schema import MlxdConfig
from mlxd.errors import MlxdError, ModelNotFoundError
from mlxd.http.body import StrictBody
from mlxd.http.dialects.openai.chat import ChatEncoder
from mlxd.http.dialects.openai.completions import CompletionEncoder
from mlxd.http.dialects.openai.stream import sse
from mlxd.http.dialects.openai.translate import translate
from mlxd.http.generation import CLIENT_CLOSED, STREAM_HEADERS, start, whole
from mlxd.http.state import DaemonState
from mlxd.hub import model_directory
from mlxd.hub.capabilities import capabilities, generates
from mlxd.protocol.requests import AnyRequest, ChatCompletionRequest, CompletionRequest
from mlxd.protocol.responses import ModelCard, ModelList
from mlxd.runtime.from_config import spec_for

_JSON = "application/json"


def _capabilities(config: MlxdConfig, alias: str) -> list[str]:
    """What an alias's model does, from its files (a model not downloaded yet: completion)."""
    model = config.models[alias]
    try:
        directory = model_directory(spec_for(model), config)
    except MlxdError:
        return ["completion"]
    return [
        *(["completion"] if generates(directory) else []),
        *capabilities(directory, pooling=model.pooling, split=config.distributed is not None),
    ]


def openai_router(state: DaemonState) -> Router:
    """``/v1`` routes bound to the daemon's state."""

    async def complete(
        request: Request[Any, Any, Any], body: AnyRequest, chat: bool
    ) -> Response[bytes] | Stream:
        generation_request, shape = translate(body, state.configs.current)
        generation = await start(state, generation_request)
        encoder: ChatEncoder | CompletionEncoder = (
            ChatEncoder(generation_request.alias, shape.logprobs)
            if chat
            else CompletionEncoder(generation_request.alias, shape.logprobs, shape.echo)
        )
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = sse(generation, encoder, include_usage)
            return Stream(events, media_type="text/event-stream", headers=STREAM_HEADERS)
        outputs = await whole(request, generation)
        if outputs is None:
            return Response(b"", status_code=CLIENT_CLOSED)  # nobody is listening any more
        return Response(msgspec.json.encode(encoder.response(outputs, generation.usage())), media_type=_JSON)

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

    def cards(config: MlxdConfig) -> list[ModelCard]:
        created = int(state.started_at)
        out = []
        for alias, model in config.models.items():
            able = _capabilities(config, alias)
            for name in (alias, *model.aliases):
                out.append(ModelCard(id=name, created=created, source=model.source, capabilities=able))
        return out

    @get("/models")
    async def list_models() -> Response[bytes]:
        """The configured aliases (and their extra names). Their capabilities come from each
        model's files, read on a thread: the event loop keeps streaming meanwhile."""
        listed = await asyncio.to_thread(cards, state.configs.current)
        return Response(msgspec.json.encode(ModelList(listed)), media_type=_JSON)

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
        card = ModelCard(
            id=name,
            created=int(state.started_at),
            source=config.models[alias].source,
            capabilities=await asyncio.to_thread(_capabilities, config, alias),
        )
        return Response(msgspec.json.encode(card), media_type=_JSON)

    return Router(path="/v1", route_handlers=[chat_completions, completions, list_models, get_model])
