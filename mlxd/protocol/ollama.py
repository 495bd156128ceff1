"""Ollama API request bodies (``/api/chat``, ``/api/generate``, ``/api/show``).

Fields follow Ollama's API reference; unknown fields (and unknown ``options``, such as
``num_gpu`` or ``mirostat``, which mean nothing to MLX) are ignored, as Ollama ignores them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from mlxd.protocol.requests import (
    Penalty,
    Probability,
    RepetitionContext,
    RepetitionPenalty,
    Seed,
    Temperature,
    TopK,
)

#: ``keep_alive``: a duration string (``"5m"``), or seconds (negative: forever).
KeepAlive = str | float | int


class Options(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``options``: the sampling and length settings mlxd honours."""

    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: TopK | None = None
    min_p: Probability | None = None
    num_predict: int | None = None
    stop: list[str] | None = None
    seed: Seed | None = None
    repeat_penalty: RepetitionPenalty | None = None
    repeat_last_n: RepetitionContext | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    num_ctx: int | None = None


class Message(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """A chat message; ``tool_calls`` carry the assistant's earlier calls, ``tool_name`` a result's tool."""

    role: str
    content: str | None = None
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None


class _Generation(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    model: str | None = None
    format: str | dict[str, Any] | None = None
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAlive | None = None
    think: bool | str | None = None


class ChatRequest(_Generation, kw_only=True):
    """``POST /api/chat``."""

    messages: list[Message] | None = None
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Generation, kw_only=True):
    """``POST /api/generate``."""

    prompt: str | None = None
    system: str | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class ShowRequest(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """``POST /api/show`` (older clients say ``name``)."""

    model: str | None = None
    name: str | None = None
