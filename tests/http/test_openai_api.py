"""The OpenAI surface against a real daemon (uvicorn on 127.0.0.1, real mlx-lm, tiny model):
response shapes, streams, models and aliases, ``n``, tools and reasoning. Request fields
one by one: ``test_openai_parameters.py``.

Random weights make gibberish: these tests assert structure, counts, determinism and
limits, never meaning.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import httpx
import openai
import pytest

from tests.conftest import RunningDaemon
from tests.http.conftest import HELLO

pytestmark = [pytest.mark.mlx, pytest.mark.server]


def test_chat_completion_has_openai_shape(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12)
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == "tiny"
    assert response.system_fingerprint
    choice = response.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_matches_non_stream_at_temperature_zero(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=24, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=HELLO,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_raw_stream_ends_with_finish_then_done(daemon: RunningDaemon) -> None:
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 5, "stream": True}
    with daemon.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    last = json.loads(events[-2].removeprefix("data: "))
    assert last["choices"][0]["finish_reason"] == "length"
    assert all(e.startswith("data: ") for e in events)


def test_text_completion_stream_and_not(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=10, temperature=0)
    assert whole.object == "text_completion"
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 10
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=10, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == whole.choices[0].text


def test_async_client_concurrent_requests(aclient: openai.AsyncOpenAI) -> None:
    async def run() -> list[int]:
        results = await asyncio.gather(
            *[
                aclient.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": f"n{i}"}], max_tokens=8 + i
                )
                for i in range(4)
            ]
        )
        return [r.usage.completion_tokens for r in results]  # type: ignore[union-attr]

    assert asyncio.run(run()) == [8, 9, 10, 11]


def test_models_list_and_get(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"tiny", "gpt-4o-mini", "tiny-lora", "plain"} <= ids
    model = client.models.retrieve("tiny")
    assert model.owned_by == "mlxd"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_alias_names_and_default(client: openai.OpenAI, daemon: RunningDaemon) -> None:
    by_alias = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=6)
    assert by_alias.model == "tiny"
    with daemon.client() as http:
        response = http.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 6})
    assert response.status_code == 200
    assert response.json()["model"] == "tiny"
    assert response.json()["choices"][0]["message"]["content"] == by_alias.choices[0].message.content


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_seed_curl_example_verbatim(daemon: RunningDaemon) -> None:
    """The seed's README example, byte for byte, against our port."""
    out = subprocess.run(
        [
            "curl",
            "-s",
            daemon.url + "/v1/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{\n"messages": [{"role": "user", "content": "Say this is a test!"}],\n"temperature": 0.7\n}',
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    body = json.loads(out.stdout)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_health(daemon: RunningDaemon) -> None:
    assert httpx.get(daemon.url + "/health").json() == {"status": "ok"}


def test_n_choices_share_one_prefill(client: openai.OpenAI, daemon: RunningDaemon) -> None:
    prompt = "A fresh prompt for n " * 20
    before = daemon.status()["prompt_tokens_processed"]
    response = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=6, n=3, temperature=1.0, seed=11
    )
    processed = daemon.status()["prompt_tokens_processed"] - before  # type: ignore[operator]
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert response.usage is not None
    assert response.usage.completion_tokens == 18
    # One prefill for the three choices (plus each choice's last prompt token), not three.
    assert processed < 1.5 * response.usage.prompt_tokens
    assert len({c.text for c in response.choices}) > 1  # each choice samples its own tokens
    again = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=6, n=3, temperature=1.0, seed=11
    )
    assert [c.text for c in again.choices] == [c.text for c in response.choices]


def test_n_choices_stream_with_their_indices(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=5, n=2, temperature=0)
    assert [c.message.content for c in whole.choices] == [
        whole.choices[0].message.content
    ] * 2  # greedy: equal
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=HELLO,
            max_tokens=5,
            n=2,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: whole.choices[0].message.content, 1: whole.choices[1].message.content}
    assert finishes == {0: "length", 1: "length"}
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 10


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tools_reach_the_chat_template(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    with_tools = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, tools=[WEATHER])  # type: ignore[list-item]
    assert plain.usage is not None
    assert with_tools.usage is not None
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 50
    assert with_tools.choices[0].message.content is not None  # random weights call no tool by themselves
    none = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=2, tools=[WEATHER], tool_choice="none"
    )  # type: ignore[list-item]
    assert none.usage is not None
    assert none.usage.prompt_tokens == plain.usage.prompt_tokens


def test_a_tool_round_trip_conversation_is_accepted(client: openai.OpenAI) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    reply = client.chat.completions.create(model="tiny", messages=messages, tools=[WEATHER], max_tokens=4)  # type: ignore[arg-type, list-item]
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 100


def test_tools_on_a_model_without_a_tool_format_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="plain", messages=HELLO, max_tokens=2, tools=[WEATHER])  # type: ignore[list-item]
    assert error.value.body["param"] == "tools"  # type: ignore[index]


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([{"type": "retrieval"}], "tools[0]"),
        ([{"type": "function", "function": {"name": "bad name!"}}], "tools[0].function.name"),
        (
            [{"type": "function", "function": {"name": "f", "parameters": "x"}}],
            "tools[0].function.parameters",
        ),
    ],
)
def test_malformed_tools_are_400(daemon: RunningDaemon, tools: list[object], param: str) -> None:
    with daemon.client() as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "tiny", "messages": HELLO, "tools": tools}
        )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_thinking_goes_to_reasoning_content(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="thinker", messages=HELLO, max_tokens=12)
    message = reply.choices[0].message
    reasoning = message.reasoning_content  # type: ignore[attr-defined]
    assert reasoning  # the template opened <think>; the random model never closes it
    assert not message.content
    chunks = list(client.chat.completions.create(model="thinker", messages=HELLO, max_tokens=12, stream=True))
    streamed = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    assert streamed == reasoning
    assert all(not c.choices[0].delta.content for c in chunks if c.choices)


def test_enable_thinking_off_per_request_and_per_alias(client: openai.OpenAI) -> None:
    per_request = client.chat.completions.create(
        model="thinker",
        messages=HELLO,
        max_tokens=12,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    per_alias = client.chat.completions.create(model="thinker-fast", messages=HELLO, max_tokens=12)
    for reply in (per_request, per_alias):
        assert reply.choices[0].message.content
        assert getattr(reply.choices[0].message, "reasoning_content", None) is None
    assert per_request.choices[0].message.content == per_alias.choices[0].message.content
    # OpenAI's reasoning_effort: none turns thinking off; a template argument sent beside it wins.
    effort = client.chat.completions.create(
        model="thinker", messages=HELLO, max_tokens=12, reasoning_effort="none"
    )
    assert effort.choices[0].message.content == per_request.choices[0].message.content
    assert getattr(effort.choices[0].message, "reasoning_content", None) is None
    overruled = client.chat.completions.create(
        model="thinker",
        messages=HELLO,
        max_tokens=12,
        reasoning_effort="none",
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
    )
    assert getattr(overruled.choices[0].message, "reasoning_content", None)
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="thinker", messages=HELLO, reasoning_effort="max")  # type: ignore[arg-type]
    assert refused.value.body["param"] == "reasoning_effort"  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("modalities", ["text", "audio"]),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("web_search_options", {}),
    ],
)
def test_output_mlxd_cannot_give_is_refused_not_ignored(
    client: openai.OpenAI, field: str, value: object
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, extra_body={field: value})
    assert refused.value.code == "unsupported_parameter"
    assert refused.value.body["param"] == field  # type: ignore[index]
    text = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=2, extra_body={"modalities": ["text"]}
    )
    assert text.choices[0].message is not None
