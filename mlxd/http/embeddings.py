"""Embedding requests of every dialect onto one ``EmbeddingRequest``, and vectors out.

OpenAI's ``/v1/embeddings`` and Ollama's ``/api/embed`` / ``/api/embeddings`` differ only in
field names and envelopes: the alias, the inputs (strings or token ids, never empty, at
most ``[limits] max_embedding_inputs`` of them), ``dimensions`` and the alias's pooling
and normalization are resolved here once for both.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import numpy.typing as npt

from mlxd.config.schema import MlxdConfig
from mlxd.errors import RequestError
from mlxd.http.ids import new_id
from mlxd.http.translate import resolve_alias
from mlxd.runtime.from_config import keep_alive_for, spec_for
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
        spec=spec_for(settings),
        inputs=_inputs(inputs, config.limits.max_embedding_inputs),
        pooling=settings.pooling,
        normalize=settings.normalize,
        dimensions=dimensions,
        keep_alive=keep_alive_for(config, alias) if keep_alive is None else keep_alive,
        truncate=truncate,
    )


def as_floats(vectors: npt.NDArray[np.float32]) -> list[list[float]]:
    """The vectors as JSON numbers, each with the 9 significant digits that read back as the
    same float32 (float64's shortest form of a float32 takes up to 17: the reply is a third
    smaller, and a client parses it 2-3 times faster)."""
    exact = vectors.astype(np.float64)
    magnitude = np.abs(exact)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        digits = 8 - np.floor(np.log10(np.where(magnitude > 0, magnitude, 1.0)))
        # An integer times or over an exact power of ten (up to 1e22) is the double nearest
        # the 9-digit decimal, which then prints as those 9 digits: so for magnitudes from
        # 1e-14 to 1e30; further out, some values take more digits (and still read back).
        up, down = 10.0 ** np.maximum(digits, 0), 10.0 ** np.maximum(-digits, 0)
        short = np.round(exact * up / down) / up * down
    # Where rounding could not keep the value (the extremes of float32's range), it stays whole.
    kept = np.isfinite(short) & (short.astype(np.float32) == vectors)
    return np.where(kept, short, exact).tolist()  # type: ignore[no-any-return]


def as_base64(row: npt.NDArray[np.float32]) -> str:
    """One vector as OpenAI's base64: little-endian float32 bytes."""
    return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
