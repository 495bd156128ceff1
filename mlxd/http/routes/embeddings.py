"""``POST /v1/embeddings``: OpenAI's embeddings over the engine's batched embedder."""

from __future__ import annotations

import msgspec
from litestar import Response, Router, post

from mlxd.http.body import StrictBody
from mlxd.http.embeddings import as_base64, as_floats, resolve_embeddings
from mlxd.http.state import DaemonState
from mlxd.protocol.embeddings import EmbeddingData, EmbeddingList, EmbeddingRequest, EmbeddingUsage


def embeddings_router(state: DaemonState) -> Router:
    """``/v1/embeddings`` bound to the daemon's state."""

    @post("/embeddings", status_code=200, dto=StrictBody[EmbeddingRequest], return_dto=None)
    async def embeddings(data: EmbeddingRequest) -> Response[bytes]:
        """Vectors for a string, strings, token ids or lists of token ids (float or base64)."""
        request = resolve_embeddings(
            state.configs.current, data.model, data.input, dimensions=data.dimensions
        )
        result = await state.engine.embed(request)
        vectors = result.vectors
        rows: list[msgspec.Raw | str] = (
            [as_base64(row) for row in vectors] if data.encoding_format == "base64" else [*as_floats(vectors)]
        )
        body = EmbeddingList(
            data=[EmbeddingData(i, row) for i, row in enumerate(rows)],
            model=request.alias,
            usage=EmbeddingUsage(result.prompt_tokens, result.prompt_tokens),
        )
        return Response(msgspec.json.encode(body), media_type="application/json")

    return Router(path="/v1", route_handlers=[embeddings])
