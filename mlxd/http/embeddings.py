"""Embedding requests of every dialect onto one ``EmbeddingRequest``, and vectors out.

OpenAI's ``/v1/embeddings`` and Ollama's ``/api/embed`` / ``/api/embeddings`` differ only in
field names and envelopes: the alias, the inputs (strings or token ids, never empty, at
most ``[limits] max_embedding_inputs`` of them), ``dimensions`` and the alias's pooling
and normalization are resolved here once for both.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from mlxd.config.schema import MlxdConfig
from mlxd.errors import RequestError
from mlxd.http.ids import new_id
from mlxd.http.translate import alias_view, resolve_alias
from mlxd.runtime.from_config import keep_alive_for
from mlxd.runtime.requests import EmbeddingRequest


def _inputs(value: Any, limit: int) -> tuple[str | tuple[int, ...], ...]:
    """``input`` as strings or token-id tuples, checked item by item."""
    items: list[Any] = [value] if isinstance(value, str) else list(value or ())
    if value is None or not items:
        raise RequestError("input must not be empty", param="input")
    if items and all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        items = [items]  # one input given as token ids
    if len(items) > limit:
        raise RequestError(f"at most {limit} inputs are accepted per request", param="input")
    out: list[str | tuple[int, ...]] = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise RequestError(f"input {i} is an empty string", param=f"input[{i}]")
            out.append(item)
        elif (
            isinstance(item, list)
            and item
            and all(isinstance(t, int) and not isinstance(t, bool) for t in item)
        ):
            if any(t < 0 for t in item):
                raise RequestError(f"input {i} has a negative token id", param=f"input[{i}]")
            out.append(tuple(item))
        else:
            raise RequestError(
                f"input {i} must be a non-empty string or a non-empty list of token ids", param=f"input[{i}]"
            )
    return tuple(out)


def resolve_embeddings(
    config: MlxdConfig,
    model: str | None,
    inputs: Any,
    *,
    dimensions: int | None = None,
    keep_alive: float | None = None,
    truncate: bool = False,
) -> EmbeddingRequest:
    """Validate an embedding request against the config; raises the 400/404 it deserves."""
    alias = resolve_alias(config, model)
    settings = config.models[alias]
    return EmbeddingRequest(
        request_id=new_id(),
        alias=alias,
        spec=alias_view(config, alias)[0],
        inputs=_inputs(inputs, config.limits.max_embedding_inputs),
        pooling=settings.pooling,
        normalize=settings.normalize,
        dimensions=dimensions,
        keep_alive=keep_alive_for(config, alias) if keep_alive is None else keep_alive,
        truncate=truncate,
    )


def as_floats(vectors: npt.NDArray[np.float32]) -> list[msgspec.Raw]:
    """Each vector as a JSON array of numbers, ready to embed in a reply: every value the
    shortest decimal that reads back as the same float32 (orjson writes float32 arrays
    directly; float64's shortest form of a float32 takes up to 17 digits, so the reply is
    about 40% smaller, and writing it takes a quarter of the time of Python floats)."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    return [msgspec.Raw(orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)) for row in rows]


def as_base64(row: npt.NDArray[np.float32]) -> str:
    """One vector as OpenAI's base64: little-endian float32 bytes."""
    return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
