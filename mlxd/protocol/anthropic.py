"""Anthropic Messages request bodies (``/v1/messages``, ``/v1/messages/count_tokens``).

Fields follow Anthropic's reference; unknown fields are ignored, as for OpenAI's bodies.
Content blocks share one struct (``type`` says which members matter), so a block of a
kind mlxd cannot serve is refused by the translator with its position, not by the decoder.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mlxd.protocol.requests import PositiveInt, Probability, Temperature, TopK


class ContentBlock(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """A content block: ``text``, ``image``, ``tool_use``, ``tool_result``, ``thinking``, …"""

    type: str
    text: str | None = None
    # tool_use
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    # tool_result
    tool_use_id: str | None = None
    content: str | list[ContentBlock] | None = None
    is_error: bool | None = None
    # thinking
    thinking: str | None = None
    # image: {"type": "base64", "media_type", "data"} or {"type": "url", "url"}
    source: dict[str, Any] | None = None


class InputMessage(msgspec.Struct, forbid_unknown_fields=False):
    """One turn: ``user`` or ``assistant``, text or blocks."""

    role: str
    content: str | list[ContentBlock]


class Tool(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """A client tool (``input_schema``), or a server tool named by its ``type``."""

    name: str
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``auto``, ``any``, ``tool`` (with ``name``) or ``none``."""

    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``enabled`` (with a ``budget_tokens``), ``disabled`` or ``adaptive``."""

    type: str
    budget_tokens: int | None = None


class CountTokensRequest(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``POST /v1/messages/count_tokens``: what the prompt is made of."""

    model: str | None = None
    messages: list[InputMessage]
    system: str | list[ContentBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class MessagesRequest(CountTokensRequest, kw_only=True):
    """``POST /v1/messages``."""

    max_tokens: PositiveInt
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: TopK | None = None
    metadata: dict[str, Any] | None = None
