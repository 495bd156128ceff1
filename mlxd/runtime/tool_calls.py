"""Find tool calls in generated text with the model's own format and parser (pure Python).

A model marks a call with its start/end tags (``<tool_call>`` … ``</tool_call>`` for
Hermes-style templates); mlx-lm knows the tags and parser of each family. Text that does
not parse as a call stays content: it is never dropped.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlxd.errors import RequestError
from mlxd.runtime.stops import partial_suffix

Parser = Callable[[str, Any], Any]


@dataclass(frozen=True, slots=True)
class ToolFormat:
    """How a model writes tool calls."""

    start: str
    end: str
    parse: Parser

    @property
    def json_between_tags(self) -> bool:
        """True for formats that write a call as ``{"name", "arguments"}`` JSON between the tags."""
        return getattr(self.parse, "__module__", "").endswith("json_tools")


def tool_call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A schema for one call of any of the OpenAI-style ``tools``: ``{"name": ..., "arguments": {...}}``.

    Constrained decoding wraps it in the model's own tool-call tags for ``tool_choice``
    "required" or a named function.
    """
    options = []
    for tool in tools:
        function = tool.get("function", tool)
        # As in OpenAI's API, a function without parameters takes an empty object.
        parameters = function.get("parameters") or {
            "type": "object",
            "properties": {},
            "additionalProperties": False,
        }
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": function["name"]}, "arguments": parameters},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if not options:
        raise RequestError("tool_choice requires at least one tool", param="tool_choice")
    return options[0] if len(options) == 1 else {"anyOf": options}


def _openai_call(parsed: Any) -> dict[str, Any] | None:
    if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
        return None
    arguments = parsed.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": parsed["name"], "arguments": arguments},
    }


def parse_call(fmt: ToolFormat, body: str, tools: Any) -> list[dict[str, Any]] | None:
    """OpenAI ``tool_calls`` entries for the text between one pair of tags, or None."""
    try:
        parsed = fmt.parse(body, tools)
    except Exception:  # a parser may raise anything on text that is no call
        return None
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = [_openai_call(item) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


class ToolCallSplitter:
    """Feed generated text; get back content to show and tool calls as each one closes."""

    def __init__(self, fmt: ToolFormat, tools: Any) -> None:
        self.fmt = fmt
        self.tools = tools
        self._buffer = ""
        self._inside = False
        self.calls = 0

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """``(content, calls)`` completed by this piece of text."""
        self._buffer += text
        content: list[str] = []
        calls: list[dict[str, Any]] = []
        while True:
            if not self._inside:
                at = self._buffer.find(self.fmt.start)
                if at == -1:
                    keep = partial_suffix(self._buffer, self.fmt.start)
                    content.append(self._buffer[: len(self._buffer) - keep])
                    self._buffer = self._buffer[len(self._buffer) - keep :]
                    break
                content.append(self._buffer[:at])
                self._buffer = self._buffer[at:]
                self._inside = True
            end = self._buffer.find(self.fmt.end, len(self.fmt.start))
            if end == -1:
                break
            raw = self._buffer[: end + len(self.fmt.end)]
            body = raw[len(self.fmt.start) : -len(self.fmt.end)]
            self._buffer = self._buffer[len(raw) :]
            self._inside = False
            parsed = parse_call(self.fmt, body, self.tools)
            if parsed is None:
                content.append(raw)
            else:
                calls.extend(parsed)
                self.calls += len(parsed)
        return "".join(content), calls

    def flush(self) -> str:
        """Whatever is still held (an unfinished call) is content after all."""
        rest, self._buffer, self._inside = self._buffer, "", False
        return rest


def split_tool_calls(fmt: ToolFormat, tools: Any, text: str) -> tuple[str, list[dict[str, Any]]]:
    """Content and tool calls of a whole generation."""
    splitter = ToolCallSplitter(fmt, tools)
    content, calls = splitter.feed(text)
    return content + splitter.flush(), calls
