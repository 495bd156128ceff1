"""OpenAI Responses request bodies (``POST /v1/responses``).

``input`` items are kept as JSON objects and read by the translator, which refuses the
kinds mlxd cannot serve with their position (``input[2].content[0]``); everything else
follows OpenAI's reference. Unknown fields are ignored, as for the other OpenAI bodies.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mlxd.protocol.requests import PositiveInt, Probability, Temperature


class TextConfig(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``text``: the output's format (``text``, ``json_object`` or ``json_schema``)."""

    format: dict[str, Any] | None = None


class ReasoningConfig(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``reasoning``: ``effort`` turns a reasoning model's thinking on or off."""

    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``POST /v1/responses``."""

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    stream: bool | None = False  # null, as OpenAI's types allow: the default
    store: bool | None = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    # Known fields mlxd does not serve: a 400 naming them when set.
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    top_logprobs: int | None = None
