"""The OpenAI surface against a real daemon (uvicorn on 127.0.0.1, real mlx-lm, tiny model).

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

pytestmark = [pytest.mark.mlx, pytest.mark.server]

HELLO = [{"role": "user", "content": "Say this is a test!"}]


@pytest.fixture(scope="module")
def client(daemon: RunningDaemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def aclient(daemon: RunningDaemon) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)


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


def test_max_tokens_limit_caps_the_request(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=1000)
    assert response.usage is not None
    assert response.usage.completion_tokens <= 64
    assert response.choices[0].finish_reason == "length"


def test_max_completion_tokens_is_honoured(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(model="tiny", messages=HELLO, max_completion_tokens=3)
    assert response.usage is not None
    assert response.usage.completion_tokens == 3


def test_seed_reproduces_sampled_output(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        r = client.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=16, temperature=1.0, seed=seed
        )
        return r.choices[0].message.content or ""

    assert sample(7) == sample(7)
    assert len({sample(s) for s in (1, 2, 3, 4)}) > 1


def test_logit_bias_forces_a_token(client: openai.OpenAI) -> None:
    probe = client.completions.create(model="tiny", prompt="abc", max_tokens=1, temperature=0, logprobs=1)
    token_id = probe.choices[0].logprobs.token_ids[0]  # type: ignore[union-attr]
    forced = (token_id + 7) % 500 + 10
    response = client.completions.create(
        model="tiny", prompt="abc", max_tokens=5, temperature=0.9, logit_bias={str(forced): 100}, logprobs=0
    )
    assert response.choices[0].logprobs.token_ids == [forced] * 5  # type: ignore[union-attr]


def _token_boundary_stop(text: str) -> str:
    """A stop string that straddles the middle of the text (not just a token)."""
    middle = len(text) // 2
    return text[middle - 2 : middle + 2]


def test_stop_string_across_token_boundaries(client: openai.OpenAI) -> None:
    full = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=30, temperature=0)
    text = full.choices[0].text
    assert len(text) > 12
    stop = _token_boundary_stop(text)
    cut = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=30, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]
    assert stop not in cut.choices[0].text
    assert cut.usage is not None
    assert cut.usage.completion_tokens < 30
    streamed = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=30, temperature=0, stop=stop, stream=True
    )
    chunks = [c for c in streamed if c.choices]
    assert "".join(c.choices[0].text for c in chunks) == cut.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_logprobs_openai_shape(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=6, logprobs=True, top_logprobs=3, temperature=0
    )
    content = response.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None
    assert len(content) == 6
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
        # greedy: the sampled token is the most likely one
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)


def test_integer_logprobs_give_the_seed_shape(daemon: RunningDaemon) -> None:
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 4, "logprobs": 2, "temperature": 0}
    with daemon.client() as http:
        logprobs = http.post("/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]
    assert set(logprobs) == {"token_logprobs", "tokens", "top_logprobs"}
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == 4
    assert all(isinstance(t, int) for t in logprobs["tokens"])
    for token, top in zip(logprobs["tokens"], logprobs["top_logprobs"], strict=True):
        assert len(top) == 2
        assert top[0]["id"] == token  # greedy picks the top token


def test_streamed_logprobs(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=5, logprobs=True, stream=True, temperature=0
        )
    )
    entries = [
        e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []
    ]
    assert len(entries) == 5


def test_role_mapping_formats_the_prompt(client: openai.OpenAI) -> None:
    default = client.chat.completions.create(model="plain", messages=HELLO, max_tokens=4)
    mapped = client.chat.completions.create(
        model="plain",
        messages=HELLO,
        max_tokens=4,
        extra_body={"role_mapping": {"system_prompt": "", "user": "Q: ", "assistant": "A: ", "stop": "\n"}},
    )
    assert default.usage is not None
    assert mapped.usage is not None
    # "Q: Say this is a test!\nA:" is far shorter than the seed's default system prompt.
    assert mapped.usage.prompt_tokens < default.usage.prompt_tokens


def test_repetition_penalty_and_context_size_change_output(client: openai.OpenAI) -> None:
    def run(**extra: object) -> str:
        r = client.completions.create(
            model="tiny", prompt="the the the the", max_tokens=24, temperature=0, extra_body=extra
        )
        return r.choices[0].text

    plain = run()
    penalised = run(repetition_penalty=1.8, repetition_context_size=64)
    assert penalised != plain
    assert run(repetition_penalty=1.8, repetition_context_size=64) == penalised


def test_top_k_min_p_presence_frequency_are_accepted_and_deterministic(client: openai.OpenAI) -> None:
    def run() -> str:
        r = client.chat.completions.create(
            model="tiny",
            messages=HELLO,
            max_tokens=10,
            temperature=0.8,
            top_p=0.9,
            seed=3,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            extra_body={"top_k": 5, "min_p": 0.05},
        )
        return r.choices[0].message.content or ""

    assert run() == run()


def test_adapters_name_a_configured_adapter(client: openai.OpenAI, daemon: RunningDaemon) -> None:
    base = client.completions.create(model="tiny", prompt="hello world", max_tokens=12, temperature=0)
    adapted = client.completions.create(
        model="tiny", prompt="hello world", max_tokens=12, temperature=0, extra_body={"adapters": "tiny-lora"}
    )
    by_alias = client.completions.create(
        model="tiny-lora", prompt="hello world", max_tokens=12, temperature=0
    )
    assert adapted.choices[0].text == by_alias.choices[0].text
    assert adapted.choices[0].text != base.choices[0].text
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(
            model="tiny", prompt="x", max_tokens=2, extra_body={"adapters": "../../etc"}
        )
    assert error.value.body["param"] == "adapters"  # type: ignore[index]


def test_adapter_alias_shares_the_base_weights(client: openai.OpenAI, daemon: RunningDaemon) -> None:
    client.completions.create(model="tiny", prompt="x", max_tokens=1)
    client.completions.create(model="tiny-lora", prompt="x", max_tokens=1)
    models = {m["alias"]: m for m in daemon.status()["models"]}  # type: ignore[union-attr]
    base, adapted = models["tiny"], models["tiny-lora"]
    assert base["memory_bytes"] > 0
    # The adapted unit holds only its LoRA matrices, not a second copy of the base.
    assert 0 < adapted["memory_bytes"] < base["memory_bytes"] / 4


def test_context_length_is_enforced(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "word " * 400}], max_tokens=4
        )
    assert error.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model="plain", prompt="hi", max_tokens=200)
    assert error.value.code == "context_length_exceeded"
    ok = client.completions.create(model="plain", prompt="hi", max_tokens=4)
    assert ok.usage is not None
    assert ok.usage.completion_tokens == 4


def test_echo_prepends_the_prompt(client: openai.OpenAI) -> None:
    response = client.completions.create(model="tiny", prompt="Echo me", max_tokens=3, echo=True)
    assert response.choices[0].text.startswith("Echo me")


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


def test_logprob_bytes_rebuild_the_exact_output(client: openai.OpenAI) -> None:
    """Tokens may split a UTF-8 character; their bytes, joined, must give the text back."""
    for prompt in ("Once upon a time", "Prices: 5 € and 7 £", "naïve café"):
        response = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=40,
            logprobs=True,
            top_logprobs=2,
        )
        content = response.choices[0].logprobs.content  # type: ignore[union-attr]
        assert content is not None
        joined = b"".join(bytes(entry.bytes or []) for entry in content)
        assert joined.decode("utf-8", errors="replace") == response.choices[0].message.content
        for entry in content:
            for alternative in entry.top_logprobs:
                assert alternative.bytes is not None


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
