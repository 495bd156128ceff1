"""Anthropic Messages out: output events to a ``message`` body or its SSE events.

A stream is ``message_start``, a ``ping``, then content blocks in the order the model
wrote them (``thinking``, ``text``, ``tool_use``), each opened by
``content_block_start``, filled by ``content_block_delta`` (``thinking_delta``,
``text_delta``, ``input_json_delta``) and closed by ``content_block_stop``; then
``message_delta`` with the ``stop_reason`` and usage, and ``message_stop``. An error
after the start is one ``error`` event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from mlxd.http.dialects import Dialect
from mlxd.http.dialects.calls import arguments_object
from mlxd.http.errors import error_document, stream_failure
from mlxd.http.ids import new_id
from mlxd.output.collect import ChoiceOutput
from mlxd.output.events import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)

_encode = msgspec.json.Encoder().encode


def stop_reason(finish: Finish) -> str:
    """Anthropic's ``stop_reason`` for how a choice ended."""
    if finish.reason == "length":
        return "max_tokens"
    if finish.reason == "tool_calls":
        return "tool_use"
    return "stop_sequence" if finish.stop_sequence is not None else "end_turn"


def tool_id(call_id: str) -> str:
    """Anthropic's ``toolu_`` ids for the parser's call ids."""
    return "toolu_" + call_id.removeprefix("call_")


def wire_usage(usage: Usage) -> dict[str, int]:
    """Anthropic counts cache reads apart from the rest of the input."""
    return {
        "input_tokens": usage.prompt_tokens - usage.cached_tokens,
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def event(name: str, body: Any) -> bytes:
    """One SSE event: its name and its JSON."""
    return b"event: " + name.encode() + b"\ndata: " + _encode(body) + b"\n\n"


class MessageEncoder:
    """One Messages request's answer: the whole ``message``, or its stream's events."""

    __slots__ = ("_block", "_index", "id", "model")

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "msg_" + new_id()
        #: The open content block's kind (``text``, ``thinking``, ``tool_use``) and index.
        self._block: str | None = None
        self._index = -1

    def message(self, out: ChoiceOutput, usage: Usage) -> dict[str, Any]:
        """The non-streaming body."""
        content: list[dict[str, Any]] = []
        if out.reasoning:
            content.append({"type": "thinking", "thinking": out.reasoning, "signature": ""})
        if out.text or not (out.calls or out.reasoning):  # as the stream: no empty blocks
            content.append({"type": "text", "text": out.text})
        for call in out.calls:
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_id(call.id),
                    "name": call.name,
                    "input": arguments_object(call.arguments),
                }
            )
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason(out.finish),
            "stop_sequence": out.finish.stop_sequence,
            "usage": wire_usage(usage),
        }

    # --- a stream ----------------------------------------------------------------------

    def opening(self, usage: Usage) -> bytes:
        """``message_start`` (with the prompt's usage) and a ``ping``."""
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": wire_usage(usage),
        }
        return event("message_start", {"type": "message_start", "message": message}) + event(
            "ping", {"type": "ping"}
        )

    def frames(self, events: Sequence[Event], usage: Callable[[], Usage]) -> bytes:
        """The events for one delivery of the choice's output, in order."""
        out: list[bytes] = []
        for item in events:
            if isinstance(item, TextDelta):
                if item.text:
                    self._open(out, "text", {"type": "text", "text": ""})
                    out.append(self._delta({"type": "text_delta", "text": item.text}))
            elif isinstance(item, ReasoningDelta):
                self._open(out, "thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta({"type": "thinking_delta", "thinking": item.text}))
            elif isinstance(item, ToolCallStart):
                block = {"type": "tool_use", "id": tool_id(item.id), "name": item.name, "input": {}}
                self._open(out, "tool_use", block, fresh=True)
            elif isinstance(item, ToolCallDelta):
                out.append(self._delta({"type": "input_json_delta", "partial_json": item.arguments}))
            elif isinstance(item, ToolCallEnd):
                self._close(out)
            elif isinstance(item, Finish):
                self._close(out)
                if item.reason == "error":
                    error = stream_failure(item.error, item.code)
                    out.append(b"event: error\ndata: " + error_document(error, Dialect.ANTHROPIC) + b"\n\n")
                    break
                ending: dict[str, Any] = {
                    "stop_reason": stop_reason(item),
                    "stop_sequence": item.stop_sequence,
                }
                out.append(
                    event(
                        "message_delta",
                        {"type": "message_delta", "delta": ending, "usage": wire_usage(usage())},
                    )
                )
                out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def _open(self, out: list[bytes], kind: str, block: dict[str, Any], fresh: bool = False) -> None:
        if self._block == kind and not fresh:
            return
        self._close(out)
        self._index += 1
        self._block = kind
        out.append(
            event(
                "content_block_start",
                {"type": "content_block_start", "index": self._index, "content_block": block},
            )
        )

    def _close(self, out: list[bytes]) -> None:
        if self._block is not None:
            out.append(event("content_block_stop", {"type": "content_block_stop", "index": self._index}))
            self._block = None

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event(
            "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}
        )
