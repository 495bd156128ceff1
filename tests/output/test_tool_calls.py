"""The tool-call splitter, with mlx-lm's own Hermes-style JSON parser."""

from __future__ import annotations

import json

import pytest
from mlx_lm.tool_parsers import json_tools

from mlxd.output.tool_calls import ParsedCall, Piece, ToolCallSplitter, ToolFormat, tool_call_schema

FMT = ToolFormat(json_tools.tool_call_start, json_tools.tool_call_end, json_tools.parse_tool_call)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def split(text: str, size: int | None = None) -> list[Piece]:
    """Feed ``text`` in pieces of ``size`` characters, then flush; adjacent content merged."""
    splitter = ToolCallSplitter(FMT, None)
    size = size or len(text) or 1
    pieces: list[Piece] = []
    for i in range(0, len(text), size):
        pieces += splitter.feed(text[i : i + size])
    rest = splitter.flush()
    if rest:
        pieces.append(rest)
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def test_content_and_calls_come_back_in_the_order_written() -> None:
    pieces = split("Let me check." + CALL + " and " + CALL.replace("Paris", "Oslo"))
    assert pieces[0] == "Let me check."
    assert pieces[1] == [ParsedCall("get_weather", '{"city": "Paris"}')]
    assert pieces[2] == " and "
    assert isinstance(pieces[3], list)
    assert json.loads(pieces[3][0].arguments) == {"city": "Oslo"}


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13])
def test_streamed_in_any_pieces_gives_the_same_result(size: int) -> None:
    text = "Sure, <tool not a call> " + CALL + " done"
    assert split(text, size) == split(text)
    assert split(text) == [
        "Sure, <tool not a call> ",
        [ParsedCall("get_weather", '{"city": "Paris"}')],
        " done",
    ]


def test_text_that_fails_to_parse_stays_content() -> None:
    broken = "<tool_call>\n{not json}\n</tool_call>"
    assert split("a" + broken + "b") == ["a" + broken + "b"]


def test_an_unfinished_call_is_returned_as_content() -> None:
    assert split('x<tool_call>\n{"name": "f", "argu') == ['x<tool_call>\n{"name": "f", "argu']


def test_a_forced_call_schema_names_each_tool() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("a", "b")]
    schema = tool_call_schema(tools)
    assert [option["properties"]["name"] for option in schema["anyOf"]] == [{"const": "a"}, {"const": "b"}]
    assert tool_call_schema(tools[:1])["properties"]["arguments"]["type"] == "object"
