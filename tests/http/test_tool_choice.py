"""``tool_choice: allowed_tools`` and ``parallel_tool_calls: false`` with the official client,
as pydantic-ai and openai-agents send them, through the real server and real mlx-lm."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import RunningDaemon, serving
from tests.http.test_bad_input import assert_envelope, assert_still_serving, post
from tests.http.test_structured_output import TIME, WEATHER

pytestmark = [pytest.mark.mlx, pytest.mark.server]

ASK = [{"role": "user", "content": "What time is it in Paris?"}]


def allowed(mode: str, *names: str) -> dict[str, Any]:
    tools = [{"type": "function", "function": {"name": name}} for name in names]
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": tools}}


@pytest.fixture(scope="module")
def tools_daemon(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with serving(
        tmp_path_factory.mktemp("tools"),
        f"""
[server]
port = 0
[runtime]
keep_alive = "forever"
[defaults]
temperature = 0.0
max_tokens = 80
[models.tiny]
model = "{tiny_model_dir}"
default = true
""",
    ) as running:
        yield running


@pytest.fixture
def client(tools_daemon: RunningDaemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=tools_daemon.url + "/v1", api_key="x", max_retries=0)


def test_allowed_tools_required_calls_one_of_the_allowed(client: openai.OpenAI) -> None:
    for seed in range(3):
        reply = client.chat.completions.create(
            model="tiny",
            messages=ASK,  # type: ignore[arg-type]
            tools=[WEATHER, TIME],  # type: ignore[list-item]
            tool_choice=allowed("required", "get_time"),  # type: ignore[arg-type]
            temperature=1.0,
            seed=seed,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls or []
        assert [c.function.name for c in calls] == ["get_time"]  # type: ignore[union-attr]
        assert json.loads(calls[0].function.arguments)["zone"] in ("utc", "local")  # type: ignore[union-attr]


def test_allowed_tools_show_the_model_only_the_allowed_ones(client: openai.OpenAI) -> None:
    def prompt_tokens(**kwargs: Any) -> int:
        reply = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=1, **kwargs)  # type: ignore[arg-type]
        assert reply.usage is not None
        return reply.usage.prompt_tokens

    both = prompt_tokens(tools=[WEATHER, TIME])
    only_time = prompt_tokens(tools=[TIME])
    assert only_time < both
    assert prompt_tokens(tools=[WEATHER, TIME], tool_choice=allowed("auto", "get_time")) == only_time
    # In auto mode nothing is forced: random weights write text, not a call.
    free = client.chat.completions.create(
        model="tiny",
        messages=ASK,  # type: ignore[arg-type]
        tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice=allowed("auto", "get_time", "get_weather"),  # type: ignore[arg-type]
        max_tokens=4,
    )
    assert free.choices[0].message.content
    assert free.choices[0].finish_reason == "length"


@pytest.mark.parametrize(
    "choice",
    [
        allowed("required", "nope"),
        allowed("sometimes", "get_time"),
        {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}},
        {"type": "allowed_tools"},
        {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function"}]}},
    ],
    ids=["unknown-tool", "bad-mode", "no-tools", "no-body", "no-name"],
)
def test_bad_allowed_tools_are_400(tools_daemon: RunningDaemon, choice: dict[str, Any]) -> None:
    body = {"model": "tiny", "messages": ASK, "tools": [WEATHER, TIME], "tool_choice": choice}
    assert_envelope(post(tools_daemon, body), 400, param="tool_choice")
    assert_still_serving(tools_daemon)


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls_false_gives_one_call(client: openai.OpenAI, stream: bool) -> None:
    kwargs: dict[str, Any] = {
        "model": "tiny",
        "messages": ASK,
        "tools": [WEATHER, TIME],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    if not stream:
        reply = client.chat.completions.create(**kwargs)
        assert len(reply.choices[0].message.tool_calls or []) == 1
        assert reply.choices[0].finish_reason == "tool_calls"
        return
    chunks = list(client.chat.completions.create(**kwargs, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [d.index for d in deltas] == [0]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
