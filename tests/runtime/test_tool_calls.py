"""The tool-call splitter, with mlx-lm's own Hermes-style JSON parser."""

from __future__ import annotations

import json

import pytest
from mlx_lm.tool_parsers import json_tools

from mlxd.runtime.tool_calls import ToolCallSplitter, ToolFormat, split_tool_calls

FMT = ToolFormat(json_tools.tool_call_start, json_tools.tool_call_end, json_tools.parse_tool_call)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_a_whole_generation_splits_into_content_and_calls() -> None:
    content, calls = split_tool_calls(FMT, None, "Let me check." + CALL + CALL.replace("Paris", "Oslo"))
    assert content == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert calls[0]["id"] != calls[1]["id"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13])
def test_streamed_in_any_pieces_gives_the_same_result(size: int) -> None:
    text = "Sure, <tool not a call> " + CALL + " done"
    splitter = ToolCallSplitter(FMT, None)
    content, calls = "", []
    for i in range(0, len(text), size):
        piece, found = splitter.feed(text[i : i + size])
        content += piece
        calls += found
    content += splitter.flush()
    assert content == "Sure, <tool not a call>  done"
    assert len(calls) == 1
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}


def test_text_that_fails_to_parse_stays_content() -> None:
    broken = "<tool_call>\n{not json}\n</tool_call>"
    content, calls = split_tool_calls(FMT, None, "a" + broken + "b")
    assert calls == []
    assert content == "a" + broken + "b"


def test_an_unfinished_call_is_returned_as_content() -> None:
    content, calls = split_tool_calls(FMT, None, 'x<tool_call>\n{"name": "f", "argu')
    assert calls == []
    assert content == 'x<tool_call>\n{"name": "f", "argu'
