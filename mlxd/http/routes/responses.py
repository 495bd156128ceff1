"""OpenAI's Responses routes: create (streaming or not), retrieve and delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.response import Stream

from mlxd.http.body import StrictBody
from mlxd.http.dialects.openai.responses_in import NAMES, translate
from mlxd.http.dialects.openai.responses_out import ResponseEncoder, wire_usage
from mlxd.http.dialects.openai.responses_store import Stored
from mlxd.http.generation import CLIENT_CLOSED, STREAM_HEADERS, Generation, start, streamed, whole
from mlxd.http.state import DaemonState
from mlxd.output.events import Finish
from mlxd.protocol.openai_responses import ResponsesRequest
from mlxd.runtime.requests import GenerationRequest, TextPrompt

_JSON = "application/json"


def responses_router(state: DaemonState) -> Router:
    """``/v1/responses`` routes bound to the daemon's state."""

    async def usage(request: GenerationRequest, generation: Generation, reasoning: str) -> dict[str, Any]:
        # The reasoning's share of the output, counted by the model's own tokenizer.
        thought = (
            await state.engine.count_tokens(replace(request, prompt=TextPrompt(text=reasoning)))
            if reasoning
            else 0
        )
        return wire_usage(generation.usage(), thought)

    def keep(
        data: ResponsesRequest,
        encoder: ResponseEncoder,
        body: dict[str, Any],
        conversation: list[dict[str, Any]],
    ) -> None:
        if data.store is False:  # null: the default, stored
            return
        answer = encoder.assistant_message()
        history = [*conversation, answer] if answer is not None else conversation
        state.responses.put(
            encoder.id, Stored(body, history), state.configs.current.server.responses_store_size
        )

    async def events(
        data: ResponsesRequest,
        request: GenerationRequest,
        generation: Generation,
        encoder: ResponseEncoder,
        conversation: list[dict[str, Any]],
    ) -> AsyncIterator[bytes]:
        yield encoder.opening()
        async for _, batch in streamed(generation):
            out = encoder.frames(batch)
            last = batch[-1]
            if isinstance(last, Finish):
                failed = last.reason == "error"
                counts = {} if failed else await usage(request, generation, encoder.reasoning_text())
                out += encoder.ending(last, counts)
                if not failed:
                    keep(data, encoder, encoder.response("completed", counts, last), conversation)
            yield out

    @post("/responses", status_code=200, dto=StrictBody[ResponsesRequest], return_dto=None)
    async def create(request: Request[Any, Any, Any], data: ResponsesRequest) -> Response[bytes] | Stream:
        """Create a response, streaming semantic events or not."""
        config = state.configs.current
        previous: tuple[dict[str, Any], ...] = ()
        if data.previous_response_id:
            stored = state.responses.get(data.previous_response_id, "previous_response_id")
            previous = tuple(dict(m) for m in stored.conversation)
        resolved, conversation = translate(data, config, previous)
        generation = await start(state, resolved, NAMES)
        encoder = ResponseEncoder(generation.alias, data)
        if data.stream:
            body = events(data, resolved, generation, encoder, conversation)
            return Stream(body, media_type="text/event-stream", headers=STREAM_HEADERS)
        outputs = await whole(request, generation)
        if outputs is None:
            return Response(b"", status_code=CLIENT_CLOSED)
        counts = await usage(resolved, generation, outputs[0].reasoning)
        response = encoder.whole(outputs[0], counts)
        keep(data, encoder, response, conversation)
        return Response(msgspec.json.encode(response), media_type=_JSON)

    @get("/responses/{response_id:str}")
    async def retrieve(response_id: str) -> Response[bytes]:
        """A stored response."""
        return Response(msgspec.json.encode(state.responses.get(response_id).body), media_type=_JSON)

    @delete("/responses/{response_id:str}", status_code=200)
    async def remove(response_id: str) -> Response[bytes]:
        """Forget a stored response."""
        state.responses.delete(response_id)
        body = {"id": response_id, "object": "response.deleted", "deleted": True}
        return Response(msgspec.json.encode(body), media_type=_JSON)

    return Router(path="/v1", route_handlers=[create, retrieve, remove])
