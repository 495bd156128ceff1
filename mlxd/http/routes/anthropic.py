"""Anthropic's Messages routes: ``/v1/messages`` and ``/v1/messages/count_tokens``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Response, Router, post
from litestar.response import Stream

from mlxd.http.body import StrictBody
from mlxd.http.dialects.anthropic.encode import MessageEncoder
from mlxd.http.dialects.anthropic.translate import NAMES, common, translate
from mlxd.http.generation import CLIENT_CLOSED, STREAM_HEADERS, Generation, start, streamed, whole
from mlxd.http.state import DaemonState
from mlxd.http.translate import dialect_names, resolve
from mlxd.protocol.anthropic import CountTokensRequest, MessagesRequest

_JSON = "application/json"


async def _events(generation: Generation, encoder: MessageEncoder) -> AsyncIterator[bytes]:
    yield encoder.opening(generation.usage())
    async for _, events in streamed(generation):
        yield encoder.frames(events, generation.usage)


def anthropic_router(state: DaemonState) -> Router:
    """``/v1/messages`` routes bound to the daemon's state."""

    @post("/messages", status_code=200, dto=StrictBody[MessagesRequest], return_dto=None)
    async def messages(request: Request[Any, Any, Any], data: MessagesRequest) -> Response[bytes] | Stream:
        """Anthropic Messages, streaming or not."""
        generation_request = translate(data, state.configs.current)
        generation = await start(state, generation_request, NAMES)
        encoder = MessageEncoder(generation.alias)
        if data.stream:
            return Stream(
                _events(generation, encoder), media_type="text/event-stream", headers=STREAM_HEADERS
            )
        outputs = await whole(request, generation)
        if outputs is None:
            return Response(b"", status_code=CLIENT_CLOSED)
        body = encoder.message(outputs[0], generation.usage())
        return Response(msgspec.json.encode(body), media_type=_JSON)

    @post("/messages/count_tokens", status_code=200, dto=StrictBody[CountTokensRequest], return_dto=None)
    async def count_tokens(data: CountTokensRequest) -> Response[bytes]:
        """The prompt's length in tokens, from the model's own chat template."""
        generation_request = resolve(common(data), state.configs.current)
        with dialect_names(NAMES):
            count = await state.engine.count_tokens(generation_request)
        return Response(msgspec.json.encode({"input_tokens": count}), media_type=_JSON)

    return Router(path="/v1", route_handlers=[messages, count_tokens])
