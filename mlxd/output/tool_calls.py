"""Find tool calls in generated text with the model's own format and parser (pure Python).

A model marks a call with its start/end tags (``<tool_call>`` … ``</tool_call>`` for
Hermes-style templates); mlx-lm knows the tags and parser of each family, and the
runtime hands them over as a ``ToolFormat``. Text that does not parse as a call stays
content: it is never dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlxd.errors import RequestError
from mlxd.output.stops import partial_suffix

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


@dataclass(frozen=True, slots=True)
class ParsedCall:
    """One call the model made: the tool's name and its arguments as JSON text."""

    name: str
    arguments: str


def tool_call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A schema for one call of any of the OpenAI-style ``tools``: ``{"name": ..., "arguments": {...}}``.

    Constrained decoding wraps it in the model's own tool-call tags when a call is forced.
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


def _call(parsed: Any) -> ParsedCall | None:
    if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
        return None
    arguments = parsed.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return ParsedCall(parsed["name"], arguments)


def parse_calls(fmt: ToolFormat, body: str, tools: Any) -> list[ParsedCall] | None:
    """The calls written between one pair of tags, or None when the text is no call."""
    try:
        parsed = fmt.parse(body, tools)
    except Exception:  # a model's parser may raise anything on text that is no call
        return None
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = [_call(item) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


#: What the splitter returns, in the order the model wrote it: content text or calls.
Piece = str | list[ParsedCall]


class ToolCallSplitter:
    """Feed generated text; get back content and calls, in order, as soon as each is certain.

    Text that could be the start of the opening tag is held until the next piece
    shows whether it is; a call is returned once its closing tag arrives.
    """

    __slots__ = ("_buffer", "_inside", "fmt", "tools")

    def __init__(self, fmt: ToolFormat, tools: Any) -> None:
        self.fmt = fmt
        self.tools = tools
        self._buffer = ""
        self._inside = False

    def feed(self, text: str) -> list[Piece]:
        """Content and calls completed by this piece of text."""
        buffer = self._buffer + text
        start, end = self.fmt.start, self.fmt.end
        if not self._inside and start[0] not in buffer:
            self._buffer = ""
            return [buffer] if buffer else []  # the common case: plain content
        pieces: list[Piece] = []
        while True:
            if not self._inside:
                at = buffer.find(start)
                if at == -1:
                    keep = partial_suffix(buffer, start)
                    if len(buffer) > keep:
                        pieces.append(buffer[: len(buffer) - keep])
                    buffer = buffer[len(buffer) - keep :]
                    break
                if at:
                    pieces.append(buffer[:at])
                buffer = buffer[at:]
                self._inside = True
            close = buffer.find(end, len(start))
            if close == -1:
                break
            raw = buffer[: close + len(end)]
            buffer = buffer[len(raw) :]
            self._inside = False
            calls = parse_calls(self.fmt, raw[len(start) : -len(end)], self.tools)
            pieces.append(raw if calls is None else calls)
        self._buffer = buffer
        return pieces

    def flush(self) -> str:
        """Whatever is still held (an unfinished call) is content after all."""
        rest, self._buffer, self._inside = self._buffer, "", False
        return rest
