"""OpenAI request bodies for chat and text completions, as msgspec Structs.

Fields follow the order of OpenAI's reference; the fields ``mlx_lm.server`` added
(``role_mapping``, ``repetition_penalty``, ``repetition_context_size``, ``top_k``,
``min_p``, ``adapters``, ``xtc_probability``, ``xtc_threshold``, ``presence_context_size``,
``frequency_context_size``, ``num_draft_tokens``, ``draft_model``) come in a separate block. Unknown fields are ignored, as
OpenAI-compatible servers do, so newer clients keep working; known fields that mlxd
does not honour yet are rejected by ``unsupported_fields``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

# The ranges of the sampling fields, shared by every dialect's wire types.
Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, msgspec.Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Temperature = Annotated[float, msgspec.Meta(ge=0.0, le=2.0)]
TopK = Annotated[int, msgspec.Meta(ge=0)]
Seed = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
RepetitionPenalty = Annotated[float, msgspec.Meta(gt=0.0, le=10.0)]
RepetitionContext = Annotated[int, msgspec.Meta(ge=1, le=8192)]


class TextPart(msgspec.Struct, forbid_unknown_fields=False):
    """A content part: ``text``, or ``image_url`` (``{"url": …}``) for a vision model."""

    type: str
    text: str | None = None
    image_url: dict[str, Any] | str | None = None


class ChatMessage(msgspec.Struct, forbid_unknown_fields=False):
    """One message of a conversation."""

    role: str
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=False):
    """``stream_options``: ask for a final usage chunk."""

    include_usage: bool | None = False  # null, as OpenAI's types allow: the default


class ResponseFormat(msgspec.Struct, forbid_unknown_fields=False):
    """``response_format``; only ``text`` is honoured so far."""

    type: str
    json_schema: dict[str, Any] | None = None


class _Sampling(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """Fields shared by both endpoints."""

    model: str | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[int, Annotated[float, msgspec.Meta(ge=-100.0, le=100.0)]] | None = None
    max_tokens: PositiveInt | None = None
    n: PositiveInt | None = None
    presence_penalty: Penalty | None = None
    response_format: ResponseFormat | None = None
    seed: Seed | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    user: str | None = None
    # mlx_lm.server's extras
    repetition_penalty: RepetitionPenalty | None = None
    repetition_context_size: RepetitionContext | None = None
    top_k: TopK | None = None
    min_p: Probability | None = None
    adapters: str | None = None
    xtc_probability: Probability | None = None
    xtc_threshold: Annotated[float, msgspec.Meta(ge=0.0, le=0.5)] | None = None
    presence_context_size: RepetitionContext | None = None
    frequency_context_size: RepetitionContext | None = None
    num_draft_tokens: Annotated[int, msgspec.Meta(ge=0, le=32)] | None = None
    #: Refused: the draft model is the alias's, set in the config.
    draft_model: str | None = None


class ChatCompletionRequest(_Sampling, kw_only=True):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage]
    logprobs: bool | Annotated[int, msgspec.Meta(ge=1, le=10)] | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    max_completion_tokens: PositiveInt | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    # Known fields mlxd does not serve: a 400 naming them when set.
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    # mlx_lm.server's extra
    role_mapping: dict[str, str] | None = None


class CompletionRequest(_Sampling, kw_only=True):
    """``POST /v1/completions``."""

    prompt: str | list[str | int]
    logprobs: Annotated[int, msgspec.Meta(ge=0, le=10)] | None = None
    echo: bool | None = False
    best_of: PositiveInt | None = None
    suffix: str | None = None


AnyRequest = ChatCompletionRequest | CompletionRequest
Endpoint = Literal["chat", "completion"]
