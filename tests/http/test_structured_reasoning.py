"""Structured output on a reasoning model, and a response format together with tools, through
the official ``openai`` client's own calls (``chat.completions.parse``) on real MLX.

The reasoning model's template opens ``<think>`` in the prompt: its answer comes after the
thinking, so the grammar lets it think (at most half of ``max_tokens``), then close the
block with its end token, and only then constrains the answer. The answer parses; the
thinking is in ``reasoning_content``.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from tests.conftest import RunningDaemon
from tests.http.test_structured_output import TIME, WEATHER

pytestmark = [pytest.mark.mlx, pytest.mark.server]

ASK = [{"role": "user", "content": "Describe a pet."}]


class Pet(BaseModel):
    """What ``parse`` turns into a strict JSON schema (bounded, so random weights finish it)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=12)
    kind: str = Field(json_schema_extra={"enum": ["cat", "dog", "bird"]})
    legs: int = Field(ge=0, le=8)


class GetWeather(BaseModel):
    """Get the weather in a city."""

    model_config = ConfigDict(extra="forbid")
    city: str = Field(max_length=16)


@pytest.fixture(scope="module")
def client(daemon: RunningDaemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)


def reasoning(message: Any) -> str:
    return str((message.model_extra or {}).get("reasoning_content") or "")


@pytest.mark.parametrize("seed", range(4))
def test_parse_on_a_thinking_model_gives_the_object_and_the_thinking(
    client: openai.OpenAI, seed: int
) -> None:
    reply = client.chat.completions.parse(
        model="thinker",
        messages=ASK,  # type: ignore[arg-type]
        response_format=Pet,
        temperature=1.0,
        seed=seed,
        max_tokens=160,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, Pet)
    thought = reasoning(choice.message)
    assert thought  # the random model never closes the block itself: it thought to the budget
    assert "</think>" not in thought
    assert "</think>" not in (choice.message.content or "")
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 160


def test_a_streamed_answer_on_a_thinking_model_parses(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="thinker",
            messages=ASK,  # type: ignore[arg-type]
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "pet", "schema": Pet.model_json_schema(), "strict": True},
            },
            stream=True,
            max_tokens=160,
        )
    )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    thought = "".join(str((d.model_extra or {}).get("reasoning_content") or "") for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert thought
    Pet.model_validate_json(content)


def test_parse_on_a_thinking_alias_with_thinking_off(client: openai.OpenAI) -> None:
    reply = client.chat.completions.parse(
        model="thinker-fast",
        messages=ASK,
        response_format=Pet,
        max_tokens=120,  # type: ignore[arg-type]
    )
    assert isinstance(reply.choices[0].message.parsed, Pet)
    assert not reasoning(reply.choices[0].message)


def test_a_forced_tool_call_on_a_thinking_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.parse(
        model="thinker",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}},
        temperature=0.8,
        seed=2,
        max_tokens=160,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "GetWeather"
    assert isinstance(call.function.parsed_arguments, GetWeather)
    assert reasoning(choice.message)


def test_a_forced_tool_call_with_a_response_format_is_accepted(client: openai.OpenAI) -> None:
    """What openai-agents sends: an output type (response_format) and a forced tool."""
    reply = client.chat.completions.parse(
        model="tiny-lora",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        response_format=Pet,
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice="required",
        temperature=0.8,
        seed=4,
        max_tokens=120,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, GetWeather)
    assert choice.message.parsed is None  # no content in a turn that calls a tool


@pytest.mark.parametrize("model", ["tiny-lora", "thinker"])
def test_tools_on_offer_with_a_schema_give_a_call_or_valid_content(client: openai.OpenAI, model: str) -> None:
    """``tool_choice: "auto"`` with a schema: every answer is a tool call or schema-valid
    content, never free text. (One call: random weights never end a run of calls with EOS,
    so several would run to max_tokens; the grammar's ``call+`` is pinned in
    tests/runtime/test_structured_grammar.py.)"""
    tools = {"get_weather": WEATHER, "get_time": TIME}
    kinds = []
    for seed in range(8):
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Weather or a pet?"}],
            tools=[WEATHER, TIME],  # type: ignore[list-item]
            tool_choice="auto",
            parallel_tool_calls=False,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "pet", "schema": Pet.model_json_schema(), "strict": True},
            },
            temperature=1.0,
            seed=seed,
            max_tokens=200,
        )
        choice = reply.choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            (call,) = choice.message.tool_calls
            parameters = tools[call.function.name]["function"]["parameters"]
            jsonschema_rs.validator_for(parameters).validate(json.loads(call.function.arguments))
            assert not (choice.message.content or "").strip()
            kinds.append("call")
        else:
            assert choice.finish_reason == "stop"
            Pet.model_validate_json(choice.message.content or "")
            kinds.append("content")
    assert len(kinds) == 8


def test_tools_and_a_schema_on_a_model_without_json_tool_calls_is_a_400(daemon: RunningDaemon) -> None:
    with daemon.client() as http:
        reply = http.post(
            "/v1/chat/completions",
            json={
                "model": "plain",
                "messages": ASK,
                "tools": [WEATHER],
                "response_format": {"type": "json_object"},
            },
        )
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] in ("tools", "response_format")
