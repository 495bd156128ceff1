"""Structured output is a guarantee: JSON schemas and forced tool calls, through the real server.

Random weights would never write valid JSON by themselves; constrained decoding makes
every output parse and validate.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema_rs
import openai
import pytest

from tests.conftest import RunningDaemon
from tests.schemas import PET

pytestmark = [pytest.mark.mlx, pytest.mark.server]

PET_FORMAT = {"type": "json_schema", "json_schema": {"name": "pet", "schema": PET, "strict": True}}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 16}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["utc", "local"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "Describe a pet."}]


@pytest.fixture(scope="module")
def aclient_factory(daemon: RunningDaemon) -> Any:
    return lambda: openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)


def test_a_hundred_schema_outputs_all_parse_and_validate(aclient_factory: Any, daemon: RunningDaemon) -> None:
    validator = jsonschema_rs.validator_for(PET)

    async def run() -> list[Any]:
        client = aclient_factory()
        slots = asyncio.Semaphore(16)  # within the daemon's batch + queue, as a polite client is

        async def one(i: int) -> Any:
            async with slots:
                return await client.chat.completions.create(
                    model="tiny-lora",
                    messages=ASK,  # type: ignore[arg-type]
                    response_format=PET_FORMAT,  # type: ignore[arg-type]
                    temperature=1.0,
                    seed=i,
                    max_tokens=400,
                )

        return list(await asyncio.gather(*[one(i) for i in range(100)]))

    replies = asyncio.run(run())
    assert len(replies) == 100
    for reply in replies:
        assert reply.choices[0].finish_reason == "stop"
        validator.validate(json.loads(reply.choices[0].message.content or ""))
    assert daemon.status()["largest_batch"] >= 8  # type: ignore[operator]


def test_json_object_mode_gives_objects_streamed_and_not(daemon: RunningDaemon) -> None:
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
    small = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model="tiny-lora",
        messages=ASK,
        response_format={"type": "json_object"},
        temperature=0.5,
        seed=1,
        max_tokens=400,  # type: ignore[arg-type]
    )
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)
    else:  # unbounded keys may run out of tokens: then it is reported, and starts as an object
        assert reply.choices[0].finish_reason == "length"
        assert (reply.choices[0].message.content or "").startswith("{")
    chunks = client.chat.completions.create(
        model="tiny-lora",
        messages=ASK,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": small}},  # type: ignore[arg-type]
        stream=True,
        max_tokens=50,
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert isinstance(json.loads(text)["ok"], bool)


def test_constrained_and_free_requests_share_a_batch(aclient_factory: Any, daemon: RunningDaemon) -> None:
    validator = jsonschema_rs.validator_for(PET)

    async def run() -> list[Any]:
        client = aclient_factory()
        calls = []
        for i in range(8):
            extra: dict[str, Any] = {"response_format": PET_FORMAT} if i % 2 else {}
            calls.append(
                client.chat.completions.create(
                    model="tiny-lora", messages=ASK, temperature=0.8, seed=i, max_tokens=120, **extra
                )  # type: ignore[arg-type]
            )
        return list(await asyncio.gather(*calls))

    before = daemon.status()["batches"]
    replies = asyncio.run(run())
    free = []
    for i, reply in enumerate(replies):
        if i % 2:
            validator.validate(json.loads(reply.choices[0].message.content or ""))
        else:
            free.append(reply.choices[0].message.content or "")
    assert not any(text.startswith('{"name": ') for text in free)  # the free rows were not constrained
    # Eight requests of up to 120 tokens in far fewer steps than 8 x 120: they decoded together.
    assert daemon.status()["batches"] - before < 4 * 120  # type: ignore[operator]


def _check_call(call: Any, tools: dict[str, Any]) -> None:
    assert call.id.startswith("call_")
    assert call.type == "function"
    schema = tools[call.function.name]["function"]["parameters"]
    jsonschema_rs.validator_for(schema).validate(json.loads(call.function.arguments))


def test_tool_choice_required_and_named(daemon: RunningDaemon) -> None:
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
    tools = {"get_weather": WEATHER, "get_time": TIME}
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    required = client.chat.completions.create(
        model="tiny-lora",
        messages=messages,
        tools=[WEATHER, TIME],
        tool_choice="required",
        temperature=0.7,
        seed=3,
        max_tokens=120,  # type: ignore[arg-type, list-item]
    )
    choice = required.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        _check_call(call, tools)
    named = client.chat.completions.create(
        model="tiny-lora",
        messages=messages,  # type: ignore[arg-type]
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=120,
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls or []] == ["get_time"]
    _check_call(named.choices[0].message.tool_calls[0], tools)  # type: ignore[index]


def test_tool_calls_stream_as_deltas_and_round_trip(daemon: RunningDaemon) -> None:
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
    chunks = list(
        client.chat.completions.create(
            model="tiny-lora",
            messages=messages,
            tools=[WEATHER],
            tool_choice="required",
            stream=True,
            max_tokens=120,  # type: ignore[arg-type, list-item]
        )
    )
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(deltas) == 1
    assert deltas[0].index == 0
    assert deltas[0].function is not None
    assert deltas[0].function.name == "get_weather"
    arguments = json.loads(deltas[0].function.arguments or "")
    jsonschema_rs.validator_for(WEATHER["function"]["parameters"]).validate(arguments)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]
    # The call goes back with its result, and the model answers (freely, this time).
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": deltas[0].id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": deltas[0].function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": deltas[0].id, "content": "cloudy, 9 C"},
    ]
    answer = client.chat.completions.create(
        model="tiny-lora", messages=messages, tools=[WEATHER], max_tokens=8
    )  # type: ignore[arg-type, list-item]
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "length"


def test_n_constrained_choices_are_each_valid(daemon: RunningDaemon) -> None:
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
    validator = jsonschema_rs.validator_for(PET)
    reply = client.chat.completions.create(
        model="tiny-lora",
        messages=ASK,
        response_format=PET_FORMAT,
        n=3,
        temperature=1.0,
        seed=5,
        max_tokens=400,  # type: ignore[arg-type]
    )
    assert len(reply.choices) == 3
    for choice in reply.choices:
        validator.validate(json.loads(choice.message.content or ""))
