"""Ollama out: output events to ``/api/chat`` and ``/api/generate`` objects and NDJSON lines.

A stream is one JSON object per line: each delivery's text (``message.content`` for chat,
``response`` for generate) and thinking, a tool call once it is complete (Ollama sends
calls whole, with object arguments), then a last object with ``done: true``, the
``done_reason`` and the counts and timings in nanoseconds. An error after the start is
one ``{"error": …}`` line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from mlxd.http.dialects.calls import arguments_object
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


def now_iso() -> str:
    """Ollama's ``created_at``: UTC, RFC 3339 with a ``Z``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": arguments_object(arguments)}}


class OllamaEncoder:
    """One ``/api/chat`` (``chat=True``) or ``/api/generate`` answer, whole or as NDJSON lines.

    It keeps the request's clock: ``started`` when the request arrived, ``admitted`` once
    the engine took it (a load included), the first output, and the end.
    """

    __slots__ = ("_calls", "admitted", "chat", "first", "model", "started")

    def __init__(self, model: str, chat: bool, started: float) -> None:
        self.model = model
        self.chat = chat
        self.started = started
        self.admitted = started
        self.first: float | None = None
        self._calls: dict[int, list[str]] = {}

    def _object(
        self, text: str, thinking: str, calls: list[dict[str, Any]] | None, done: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "created_at": now_iso()}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            body["message"] = message
        else:
            body["response"] = text
            if thinking:
                body["thinking"] = thinking
        body["done"] = done
        return body

    def _finish(self, body: dict[str, Any], finish: Finish, usage: Usage) -> dict[str, Any]:
        end = time.perf_counter()
        first = self.first if self.first is not None else end
        body["done_reason"] = "length" if finish.reason == "length" else "stop"
        body["total_duration"] = int((end - self.started) * 1e9)
        body["load_duration"] = int((self.admitted - self.started) * 1e9)
        body["prompt_eval_count"] = usage.prompt_tokens
        body["prompt_eval_duration"] = int((first - self.admitted) * 1e9)
        body["eval_count"] = usage.completion_tokens
        body["eval_duration"] = int((end - first) * 1e9)
        return body

    def whole(self, out: ChoiceOutput, usage: Usage) -> dict[str, Any]:
        """The non-streaming object."""
        calls = [_call(c.name, c.arguments) for c in out.calls] or None
        return self._finish(self._object(out.text, out.reasoning, calls, True), out.finish, usage)

    def lines(self, events: Sequence[Event], usage: Callable[[], Usage]) -> bytes:
        """The NDJSON lines for one delivery of output events, in the order written."""
        if self.first is None:
            self.first = time.perf_counter()
        out: list[bytes] = []
        text: list[str] = []
        thinking: list[str] = []

        def flush() -> None:
            if text or thinking:
                out.append(self._line(self._object("".join(text), "".join(thinking), None, False)))
                text.clear()
                thinking.clear()

        for event in events:
            if isinstance(event, TextDelta):
                if event.text:
                    text.append(event.text)
            elif isinstance(event, ReasoningDelta):
                thinking.append(event.text)
            elif isinstance(event, ToolCallStart):
                self._calls[event.index] = [event.name, ""]
            elif isinstance(event, ToolCallDelta):
                self._calls[event.index][1] += event.arguments
            elif isinstance(event, ToolCallEnd):
                flush()
                name, arguments = self._calls.pop(event.index)
                out.append(self._line(self._object("", "", [_call(name, arguments)], False)))
            elif isinstance(event, Finish):
                flush()
                if event.reason == "error":
                    out.append(self._line({"error": event.error or "generation failed"}))
                else:
                    out.append(self._line(self._finish(self._object("", "", None, True), event, usage())))
        flush()
        return b"".join(out)

    @staticmethod
    def _line(body: dict[str, Any]) -> bytes:
        return _encode(body) + b"\n"
