"""Anthropic's Messages API through the official ``anthropic`` client, on real MLX.

``messages.create``, ``messages.stream``, tools with ``tool_choice`` any / tool,
thinking blocks, ``count_tokens``, and ``x-api-key``: as the client's users call them.
The SDK takes no ``repetition_penalty`` and friends of its own: such fields travel
through ``extra_body``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import jsonschema_rs
import pytest

from tests.conftest import RunningDaemon, serving
from tests.http.test_structured_output import TIME, WEATHER

pytestmark = [pytest.mark.mlx, pytest.mark.server]

HI = [{"role": "user", "content": "Say hi"}]


def prompt_tokens(message: anthropic.types.Message) -> int:
    """The whole prompt: Anthropic counts cache reads apart from ``input_tokens``."""
    return message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)


TOOLS: list[Any] = [
    {"name": t["function"]["name"], "description": "a tool", "input_schema": t["function"]["parameters"]}
    for t in (WEATHER, TIME)
]


def test_create_answers_with_a_text_block_and_usage(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="tiny", max_tokens=6, messages=HI)  # type: ignore[arg-type]
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "tiny"
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 6
    assert message.usage.input_tokens > 0
    again = claude.messages.create(model="tiny", max_tokens=6, messages=HI, extra_body={"temperature": 0})  # type: ignore[arg-type]
    assert again.content == message.content


def test_system_blocks_and_extra_fields(claude: anthropic.Anthropic) -> None:
    plain = claude.messages.create(model="tiny", max_tokens=1, messages=HI)  # type: ignore[arg-type]
    led = claude.messages.create(
        model="tiny",
        max_tokens=1,
        system=[{"type": "text", "text": "Be brief."}],
        messages=HI,  # type: ignore[arg-type]
    )
    assert prompt_tokens(led) > prompt_tokens(plain)
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model="tiny",
            max_tokens=1,
            messages=HI,  # type: ignore[arg-type]
            extra_body={"temperature": 5},
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_stream_events_rebuild_the_same_message(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="tiny", max_tokens=6, messages=HI) as stream:  # type: ignore[arg-type]
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert "content_block_start" in kinds
    assert kinds[-2:] == ["message_delta", "message_stop"]
    whole = claude.messages.create(model="tiny", max_tokens=6, messages=HI)  # type: ignore[arg-type]
    assert [b.model_dump(exclude={"parsed_output"}) for b in final.content] == [
        b.model_dump() for b in whole.content
    ]
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 6


@pytest.mark.parametrize(
    ("choice", "names"),
    [({"type": "any"}, {"get_weather", "get_time"}), ({"type": "tool", "name": "get_time"}, {"get_time"})],
    ids=["any", "tool"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_tool_choice_forces_a_tool_use_block(
    claude: anthropic.Anthropic, choice: dict[str, Any], names: set[str], stream: bool
) -> None:
    kwargs: Any = {
        "model": "tiny-lora",
        "max_tokens": 120,
        "messages": HI,
        "tools": TOOLS,
        "tool_choice": choice,
    }
    if stream:
        with claude.messages.stream(**kwargs) as events:
            message = events.get_final_message()
    else:
        message = claude.messages.create(**kwargs)
    uses = [block for block in message.content if block.type == "tool_use"]
    assert len(uses) == 1
    assert message.stop_reason == "tool_use"
    use = uses[0]
    assert use.name in names
    assert use.id.startswith("toolu_")
    schema = next(t["input_schema"] for t in TOOLS if t["name"] == use.name)
    jsonschema_rs.validator_for(schema).validate(use.input)
    # The result goes back as a tool_result block, and the conversation carries on.
    reply = claude.messages.create(
        model="tiny-lora",
        max_tokens=3,
        tools=TOOLS,
        messages=[
            *HI,
            {"role": "assistant", "content": [use.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
        ],
    )
    assert prompt_tokens(reply) > prompt_tokens(message)


def test_thinking_blocks_from_a_thinking_model(claude: anthropic.Anthropic) -> None:
    thought = claude.messages.create(
        model="thinker",
        max_tokens=10,
        messages=HI,
        thinking={"type": "enabled", "budget_tokens": 1024},  # type: ignore[arg-type]
    )
    assert thought.content[0].type == "thinking"
    assert thought.content[0].thinking  # type: ignore[union-attr]
    with claude.messages.stream(
        model="thinker",
        max_tokens=10,
        messages=HI,
        thinking={"type": "enabled", "budget_tokens": 1024},  # type: ignore[arg-type]
    ) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        streamed = stream.get_final_message()
    assert "thinking_delta" in deltas
    assert [b.model_dump(exclude={"parsed_output"}) for b in streamed.content] == [
        b.model_dump() for b in thought.content
    ]
    quiet = claude.messages.create(
        model="thinker",
        max_tokens=10,
        messages=HI,
        thinking={"type": "disabled"},  # type: ignore[arg-type]
    )
    assert [block.type for block in quiet.content] == ["text"]


def test_count_tokens_matches_what_generation_counts(claude: anthropic.Anthropic) -> None:
    for kwargs in ({"messages": HI}, {"messages": HI, "tools": TOOLS, "system": "Be brief."}):
        counted = claude.messages.count_tokens(model="tiny", **kwargs)  # type: ignore[arg-type]
        created = claude.messages.create(model="tiny", max_tokens=1, **kwargs)  # type: ignore[arg-type]
        assert counted.input_tokens == created.usage.input_tokens + (
            created.usage.cache_read_input_tokens or 0
        )


def test_stop_sequences_end_the_answer_early(claude: anthropic.Anthropic) -> None:
    free = claude.messages.create(model="tiny-lora", max_tokens=30, messages=HI)  # type: ignore[arg-type]
    text = free.content[0].text  # type: ignore[union-attr]
    stop = text[8:11]
    assert stop.strip()
    stopped = claude.messages.create(model="tiny-lora", max_tokens=30, messages=HI, stop_sequences=[stop])  # type: ignore[arg-type]
    assert stopped.content[0].text == text[: text.index(stop)]  # type: ignore[union-attr]
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == stop


def test_images_and_server_tools_are_400s_naming_them(claude: anthropic.Anthropic) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    with pytest.raises(anthropic.BadRequestError, match="image"):
        claude.messages.create(
            model="tiny",
            max_tokens=1,
            messages=[{"role": "user", "content": [image]}],  # type: ignore[list-item]
        )
    with pytest.raises(anthropic.BadRequestError, match="web_search"):
        claude.messages.create(
            model="tiny",
            max_tokens=1,
            messages=HI,  # type: ignore[arg-type]
            tools=[{"type": "web_search_20250305", "name": "web_search"}],  # type: ignore[list-item]
        )


def test_x_api_key_is_what_the_client_sends(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = f"""
[server]
port = 0
api_key = "sekrit"
[models.tiny]
model = "{tiny_model_dir}"
"""
    with serving(tmp_path, config) as running:
        good = anthropic.Anthropic(base_url=running.url, api_key="sekrit", max_retries=0)
        message = good.messages.create(model="tiny", max_tokens=2, messages=HI)  # type: ignore[arg-type]
        assert message.usage.output_tokens == 2
        bad = anthropic.Anthropic(base_url=running.url, api_key="wrong", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as refused:
            bad.messages.create(model="tiny", max_tokens=2, messages=HI)  # type: ignore[arg-type]
        assert refused.value.body == {  # type: ignore[comparison-overlap]
            "type": "error",
            "error": {"type": "authentication_error", "message": "missing or wrong API key"},
        }


def test_count_tokens_of_an_unknown_model_is_a_404(daemon: RunningDaemon) -> None:
    with daemon.client() as http:
        response = http.post("/v1/messages/count_tokens", json={"model": "nope", "messages": HI})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert json.loads(response.text)["type"] == "error"
