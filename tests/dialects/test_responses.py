"""OpenAI's Responses API through the official ``openai`` client, on real MLX.

``responses.create``, ``responses.stream``, ``responses.parse`` with a pydantic model, a
function-tool round trip over ``previous_response_id``, retrieve and delete, reasoning
items from a thinking model: as openai-agents and Codex-style agents call them. The
client validates every body strictly against its own types.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import openai
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from tests.conftest import RunningDaemon
from tests.http.test_structured_output import WEATHER

pytestmark = [pytest.mark.mlx, pytest.mark.server]

EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
#: WEATHER as a Responses function tool (flat, not nested under "function").
WEATHER_TOOL = {"type": "function", **WEATHER["function"]}  # type: ignore[dict-item]


class Pet(pydantic.BaseModel):
    """The pydantic model ``responses.parse`` turns into a strict json_schema."""

    name: str = pydantic.Field(max_length=12)
    legs: int = pydantic.Field(ge=0, le=8)


def test_create_answers_with_one_message_and_usage(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="tiny", input="Say hi", max_output_tokens=6)
    assert response.object == "response"
    assert response.status == "incomplete"  # random weights never stop before 6 tokens
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text
    usage = response.usage
    assert usage is not None
    assert usage.output_tokens == 6
    assert usage.total_tokens == usage.input_tokens + 6
    assert usage.input_tokens_details.cached_tokens >= 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    again = oai.responses.create(model="tiny", input="Say hi", max_output_tokens=6, temperature=0)
    assert again.output_text == response.output_text  # greedy is deterministic


def test_instructions_and_message_items_reach_the_template(oai: openai.OpenAI) -> None:
    plain = oai.responses.create(model="tiny", input="Hi", max_output_tokens=1)
    led = oai.responses.create(model="tiny", input="Hi", instructions="Be brief.", max_output_tokens=1)
    items = oai.responses.create(
        model="tiny",
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        ],
        max_output_tokens=1,
    )
    assert plain.usage is not None
    assert led.usage is not None
    assert items.usage is not None
    assert led.usage.input_tokens > plain.usage.input_tokens
    assert items.usage.input_tokens == led.usage.input_tokens


def test_stream_sends_the_semantic_events_in_order(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="tiny", input="Say hi", max_output_tokens=5) as stream:
        events = list(stream)
    # Random weights never stop before 5 tokens: the stream ends as OpenAI ends a response
    # cut at max_output_tokens (the SDK's get_final_response waits for response.completed).
    last = events[-1]
    assert last.type == "response.incomplete"
    final = last.response
    assert final.status == "incomplete"
    assert final.completed_at is None  # only a completed response says when it completed
    assert final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    again = oai.responses.create(model="tiny", input="Say hi", max_output_tokens=5)
    assert again.output_text == final.output_text  # streamed or not, the same greedy text


def test_every_streamed_event_validates_against_the_sdk_types(daemon: RunningDaemon) -> None:
    body = {"model": "thinker", "input": "Hi", "max_output_tokens": 6, "stream": True}
    with daemon.client() as http:
        response = http.post("/v1/responses", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b]
    for block in blocks:
        name, data = block.split("\n", 1)
        event = json.loads(data.removeprefix("data: "))
        assert name == "event: " + event["type"]
        EVENT.validate_python(event)
    assert json.loads(blocks[-1].split("\n", 1)[1].removeprefix("data: "))["type"] == "response.incomplete"


def test_parse_gives_the_pydantic_object(oai: openai.OpenAI) -> None:
    parsed = oai.responses.parse(model="tiny", input="Describe a pet.", text_format=Pet, max_output_tokens=60)
    assert isinstance(parsed.output_parsed, Pet)
    assert parsed.output_parsed.model_dump() == json.loads(parsed.output_text)


def test_function_tools_round_trip_over_previous_response_id(oai: openai.OpenAI) -> None:
    asked = oai.responses.create(
        model="tiny-lora",
        input="Weather in Paris?",
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_output_tokens=120,
    )
    calls = [item for item in asked.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather"
    jsonschema_rs.validator_for(WEATHER["function"]["parameters"]).validate(json.loads(calls[0].arguments))
    answered = oai.responses.create(
        model="tiny-lora",
        previous_response_id=asked.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        tools=[WEATHER_TOOL],
        max_output_tokens=4,
    )
    assert answered.previous_response_id == asked.id
    assert answered.usage is not None
    assert asked.usage is not None
    # The whole conversation came along: the first input, its call, and the result.
    assert answered.usage.input_tokens > asked.usage.input_tokens + asked.usage.output_tokens - 10
    by_items = oai.responses.create(
        model="tiny-lora",
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
        ],
        tools=[WEATHER_TOOL],
        max_output_tokens=4,
    )
    assert by_items.usage is not None
    assert by_items.usage.input_tokens == answered.usage.input_tokens
    assert by_items.output_text == answered.output_text


def test_a_streamed_forced_call_arrives_as_a_function_call_item(oai: openai.OpenAI) -> None:
    with oai.responses.stream(
        model="tiny-lora",
        input="Weather?",
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_output_tokens=120,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    (call,) = [item for item in final.output if item.type == "function_call"]
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert arguments == call.arguments
    assert [e.type for e in events].count("response.function_call_arguments.done") == 1


def test_retrieve_delete_and_unknown_ids(oai: openai.OpenAI) -> None:
    created = oai.responses.create(model="tiny", input="Hi", max_output_tokens=2)
    assert oai.responses.retrieve(created.id).output_text == created.output_text
    oai.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError) as unknown:
        oai.responses.create(model="tiny", input="Hi", previous_response_id=created.id)
    assert unknown.value.body["param"] == "previous_response_id"  # type: ignore[index]
    unstored = oai.responses.create(model="tiny", input="Hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(unstored.id)


def test_reasoning_items_and_tokens_from_a_thinking_model(oai: openai.OpenAI) -> None:
    thought = oai.responses.create(model="thinker", input="Hi", max_output_tokens=12)
    assert thought.output[0].type == "reasoning"
    assert thought.usage is not None
    assert 0 < thought.usage.output_tokens_details.reasoning_tokens <= 12
    quiet = oai.responses.create(
        model="thinker", input="Hi", max_output_tokens=12, reasoning={"effort": "none"}
    )
    assert [item.type for item in quiet.output] == ["message"]
    assert quiet.usage is not None
    assert quiet.usage.output_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0]"),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}],
                    }
                ]
            },
            "input[0].content[0]",
        ),
        ({"max_output_tokens": 10**6}, "max_output_tokens"),
        (
            {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"$ref": "http://x/s.json"}}}},
            "text.format",
        ),
        ({"input": []}, "input"),
        ({"background": True}, "background"),
    ],
    ids=["web-search", "code-interpreter", "image", "max-tokens", "schema", "empty", "background"],
)
def test_what_cannot_be_served_is_a_400_naming_it(
    daemon: RunningDaemon, fields: dict[str, Any], param: str
) -> None:
    with daemon.client() as http:
        response = http.post("/v1/responses", json={"model": "tiny", "input": "Hi", **fields})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
        assert (
            http.post(
                "/v1/responses", json={"model": "tiny", "input": "Hi", "max_output_tokens": 1}
            ).status_code
            == 200
        )
