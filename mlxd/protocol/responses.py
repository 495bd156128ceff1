"""OpenAI response bodies and stream chunks, as msgspec Structs (fast to encode).

They follow OpenAI's published OpenAPI document: fields the document requires are
always sent (``message.refusal`` and ``logprobs.refusal`` as null), and optional fields
that may not be null are left out rather than sent as null (``usage`` in stream chunks
that do not carry it).
"""

from __future__ import annotations

from typing import Any

import msgspec


class PromptTokensDetails(msgspec.Struct):
    """How many prompt tokens came from the prompt cache."""

    cached_tokens: int = 0


class Usage(msgspec.Struct):
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = msgspec.field(default_factory=PromptTokensDetails)


class TopLogprob(msgspec.Struct):
    """One alternative token in OpenAI's chat logprobs shape."""

    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(msgspec.Struct):
    """One generated token in OpenAI's chat logprobs shape."""

    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChatLogprobs(msgspec.Struct):
    """``choices[].logprobs`` for ``logprobs: true`` (a model never refuses here: ``refusal`` is null)."""

    content: list[TokenLogprob]
    refusal: list[TokenLogprob] | None = None


class SeedTopLogprob(msgspec.Struct):
    """One alternative in the seed server's shape (token id, its text, its logprob)."""

    id: int
    token: str
    logprob: float


class SeedLogprobs(msgspec.Struct):
    """The seed server's shape, for an integer ``logprobs`` on chat completions (an mlx_lm.server
    extension: such a request is outside OpenAI's schema, and so is this answer to it)."""

    token_logprobs: list[float]
    tokens: list[int]
    top_logprobs: list[list[SeedTopLogprob]]


class LegacyLogprobs(msgspec.Struct):
    """OpenAI's legacy completions shape (which the seed's keys are a subset of)."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]
    token_ids: list[int]


AnyLogprobs = ChatLogprobs | SeedLogprobs | LegacyLogprobs


class AssistantMessage(msgspec.Struct, omit_defaults=True):
    """The generated message (``content`` is null when the model only called tools;
    ``refusal``, required by OpenAI's schema, is always null)."""

    role: str
    content: str | None
    refusal: str | None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(msgspec.Struct):
    """One choice of a chat completion."""

    index: int
    message: AssistantMessage
    logprobs: AnyLogprobs | None
    finish_reason: str | None


class ChatCompletion(msgspec.Struct):
    """``POST /v1/chat/completions`` response."""

    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str
    object: str = "chat.completion"


class Delta(msgspec.Struct, omit_defaults=True):
    """The increment a stream chunk carries."""

    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChunkChoice(msgspec.Struct):
    """One choice of a chat stream chunk."""

    index: int
    delta: Delta
    logprobs: AnyLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(msgspec.Struct):
    """One ``data:`` event of a chat stream."""

    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: str
    object: str = "chat.completion.chunk"
    #: Only the final chunk of ``stream_options.include_usage`` carries it; the others omit it.
    usage: Usage | msgspec.UnsetType = msgspec.UNSET


class TextChoice(msgspec.Struct):
    """One choice of a text completion (also used in its stream chunks).

    OpenAI's schema requires ``finish_reason`` and admits no null, yet says streamed
    chunks share this shape: no value is both valid and true for a chunk that does not
    end the choice. Like OpenAI's own API, such chunks carry null.
    """

    index: int
    text: str
    logprobs: AnyLogprobs | None
    finish_reason: str | None


class TextCompletion(msgspec.Struct):
    """``POST /v1/completions`` response and stream chunk."""

    id: str
    created: int
    model: str
    choices: list[TextChoice]
    system_fingerprint: str
    object: str = "text_completion"
    #: Always on a whole response; on stream chunks only the final usage chunk has it.
    usage: Usage | msgspec.UnsetType = msgspec.UNSET


class ModelCard(msgspec.Struct):
    """An entry of ``GET /v1/models``."""

    id: str
    created: int
    source: str
    object: str = "model"
    owned_by: str = "mlxd"
    #: ``completion``, plus ``vision`` and ``embedding`` where the model's files say so.
    capabilities: list[str] = msgspec.field(default_factory=lambda: ["completion"])


class ModelList(msgspec.Struct):
    """``GET /v1/models``."""

    data: list[ModelCard]
    object: str = "list"


class ErrorBody(msgspec.Struct):
    """The inside of OpenAI's error envelope."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    """OpenAI's error envelope: ``{"error": {...}}``."""

    error: ErrorBody


def to_builtins(value: Any) -> Any:
    """Structs to plain JSON-able objects (for tests and the CLI)."""
    return msgspec.to_builtins(value)
