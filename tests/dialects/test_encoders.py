"""Each dialect's encoder on scripted output events (no engine, no server).

Random weights never think, answer and call a tool on cue; scripted events do, so the
order of blocks and items, the tool-call framing and the error framing of every dialect
are pinned here, each event checked against the dialect's own client types.
"""

from __future__ import annotations

import json
from typing import Any

import ollama
import pydantic
import pytest
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent
from openai.types.responses import Response as OpenAIResponse
from openai.types.responses import ResponseStreamEvent

from mlxd.http.dialects.anthropic.encode import MessageEncoder, stop_reason
from mlxd.http.dialects.ollama.encode import OllamaEncoder
from mlxd.http.dialects.openai.responses_out import ResponseEncoder, wire_usage
from mlxd.output.collect import Collector
from mlxd.output.events import Finish, TextDelta, Usage
from mlxd.protocol.openai_responses import ResponsesRequest
from tests.dialects.scripted import THINK_TEXT_CALL

USAGE = Usage(prompt_tokens=20, completion_tokens=9, cached_tokens=4)
ANTHROPIC_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
RESPONSES_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)


def sse(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of each Server-Sent Event."""
    out = []
    for block in body.decode().split("\n\n"):
        if block:
            name, data = block.split("\n", 1)
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_anthropic_stream_blocks_follow_the_order_written() -> None:
    encoder = MessageEncoder("tiny")
    body = encoder.opening(USAGE) + b"".join(encoder.frames(e, lambda: USAGE) for e in THINK_TEXT_CALL)
    events = sse(body)
    for name, data in events:
        assert name == data["type"]
        if name != "ping":  # ping is no event of the SDK's union; its client skips it
            ANTHROPIC_EVENT.validate_python(data)
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "ping"]
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "text", "tool_use"]
    assert starts[2]["id"] == "toolu_abc"
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert "".join(d.get("thinking", "") for d in deltas) == "let me think"
    assert json.loads("".join(d.get("partial_json", "") for d in deltas)) == {"city": "Paris"}
    assert [d["index"] for n, d in events if n == "content_block_stop"] == [0, 1, 2]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == 9
    assert events[0][1]["message"]["usage"] == {
        "input_tokens": 16,
        "output_tokens": 9,
        "cache_read_input_tokens": 4,
        "cache_creation_input_tokens": 0,
    }


def test_anthropic_message_body_and_stop_reasons() -> None:
    collector = Collector()
    for events in THINK_TEXT_CALL:
        collector.add(events)
    body = MessageEncoder("tiny").message(collector.result(), USAGE)
    message = AnthropicMessage.model_validate(body)
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[2].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert stop_reason(Finish("stop", 3, stop_sequence="END")) == "stop_sequence"
    assert stop_reason(Finish("stop", 3)) == "end_turn"
    assert stop_reason(Finish("length", 3)) == "max_tokens"


def test_anthropic_failure_after_the_start_is_an_error_event() -> None:
    encoder = MessageEncoder("tiny")
    events = sse(encoder.frames([TextDelta("Hi"), Finish("error", 1, "the worker died")], lambda: USAGE))
    assert [n for n, _ in events][-1] == "error"
    assert events[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "the worker died"}}
    assert "message_stop" not in [n for n, _ in events]


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "generate"])
def test_ollama_lines_carry_thinking_text_then_whole_calls(chat: bool) -> None:
    encoder = OllamaEncoder("tiny", chat, started=0.0)
    lines = [
        json.loads(line) for e in THINK_TEXT_CALL for line in encoder.lines(e, lambda: USAGE).splitlines()
    ]
    kind = ollama.ChatResponse if chat else ollama.GenerateResponse
    for line in lines:
        kind.model_validate(line)
    assert [line["done"] for line in lines] == [False, False, False, True]
    if chat:
        assert lines[0]["message"]["thinking"] == "let me think"
        assert lines[1]["message"]["content"] == "Sure. "
        assert lines[2]["message"]["tool_calls"] == [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        ]
    else:
        assert (lines[0]["thinking"], lines[1]["response"]) == ("let me think", "Sure. ")
    last = lines[-1]
    assert (last["done_reason"], last["prompt_eval_count"], last["eval_count"]) == ("stop", 20, 9)
    assert last["total_duration"] >= last["eval_duration"] >= 0


def test_ollama_failure_after_the_start_is_an_error_line() -> None:
    encoder = OllamaEncoder("tiny", True, started=0.0)
    lines = encoder.lines(
        [TextDelta("Hi"), Finish("error", 1, "the worker died")], lambda: USAGE
    ).splitlines()
    assert json.loads(lines[-1]) == {"error": "the worker died"}


def _request(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest(input="hi", **fields)


def test_responses_stream_items_have_one_identity_from_added_to_completed() -> None:
    encoder = ResponseEncoder("tiny", _request(tools=[{"type": "function", "name": "get_weather"}]))
    body = encoder.opening()
    for events in THINK_TEXT_CALL:
        body += encoder.frames(events)
    body += encoder.ending(THINK_TEXT_CALL[-1][-1], wire_usage(USAGE, 2))  # type: ignore[arg-type]
    events = sse(body)
    for name, data in events:
        assert name == data["type"]
        RESPONSES_EVENT.validate_python(data)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    names = [n for n, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    added = [d["item"] for n, d in events if n == "response.output_item.added"]
    done = [d["item"] for n, d in events if n == "response.output_item.done"]
    final = events[-1][1]["response"]
    assert final["completed_at"] >= final["created_at"]  # completed: it says when
    assert events[0][1]["response"]["completed_at"] is None
    assert [i["type"] for i in added] == ["reasoning", "message", "function_call"]
    assert [i["id"] for i in added] == [i["id"] for i in done] == [i["id"] for i in final["output"]]
    assert final["output"][0]["content"][0]["text"] == "let me think"
    assert final["output"][1]["content"][0]["text"] == "Sure. "
    assert json.loads(final["output"][2]["arguments"]) == {"city": "Paris"}
    assert final["output"][2]["call_id"] == "call_abc"
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 2
    assert final["usage"]["input_tokens_details"]["cached_tokens"] == 4
    OpenAIResponse.model_validate(final)
    assert encoder.assistant_message() == {
        "role": "assistant",
        "content": "Sure. ",
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    }


def test_responses_failure_after_the_start_is_response_failed() -> None:
    encoder = ResponseEncoder("tiny", _request())
    body = encoder.opening() + encoder.frames([TextDelta("Hi")])
    body += encoder.ending(Finish("error", 1, "the worker died"), {})
    events = sse(body)
    assert events[-1][0] == "response.failed"
    RESPONSES_EVENT.validate_python(events[-1][1])
    assert events[-1][1]["response"]["error"]["message"] == "the worker died"
