"""Embedding request and response bodies: OpenAI's ``/v1/embeddings`` and Ollama's
``/api/embed`` and ``/api/embeddings``.

``input`` is a string, a list of strings, a list of token ids or a list of such lists;
msgspec cannot tell lists apart inside one union, so the translator checks the items.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from mlxd.protocol.ollama import KeepAlive
from mlxd.protocol.requests import PositiveInt


class EmbeddingRequest(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``POST /v1/embeddings``."""

    input: str | list[Any]
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = None  # null: float, as OpenAI takes it
    dimensions: PositiveInt | None = None
    user: str | None = None


class EmbeddingData(msgspec.Struct):
    """One input's vector: a JSON array of floats (written ahead), or base64 of
    little-endian float32."""

    index: int
    embedding: msgspec.Raw | str
    object: str = "embedding"


class EmbeddingUsage(msgspec.Struct):
    """Tokens the inputs took."""

    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct):
    """The ``/v1/embeddings`` response."""

    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
    object: str = "list"


class OllamaEmbedRequest(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``POST /api/embed``: ``truncate`` (on by default) cuts inputs to the context."""

    model: str | None = None
    input: str | list[Any] | None = None
    truncate: bool = True
    dimensions: PositiveInt | None = None
    keep_alive: KeepAlive | None = None
    options: dict[str, Any] | None = None


class OllamaEmbeddingsRequest(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``POST /api/embeddings``, Ollama's older form: one ``prompt``."""

    model: str | None = None
    prompt: str | None = None
    keep_alive: KeepAlive | None = None
    options: dict[str, Any] | None = None
