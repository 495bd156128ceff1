"""Request fields one by one against a real daemon (real mlx-lm, tiny model): limits,
seeds, logit bias, stop strings, logprobs, role mapping, penalties, adapters, context.

Random weights make gibberish: these tests assert structure, counts, determinism and
limits, never meaning.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.conftest import RunningDaemon
from tests.http.conftest import HELLO

pytestmark = [pytest.mark.mlx, pytest.mark.server]


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
    with pytest.raises(openai.BadRequestError) as refused:  # not silently left out
        client.completions.create(model="tiny", prompt=[375, 69, 71], max_tokens=3, echo=True)
    assert refused.value.code == "unsupported_parameter"
    assert "token ids" in refused.value.message


def test_a_text_completion_keeps_the_space_its_first_token_starts_with(
    client: openai.OpenAI, tiny_model_dir: Path
) -> None:
    """The output continues the prompt: "Once upon a" + " time", as OpenAI returns it. A chat
    reply drops that space, as mlx-lm's detokenizers do."""
    from transformers import AutoTokenizer

    (time,) = AutoTokenizer.from_pretrained(tiny_model_dir).encode(" time", add_special_tokens=False)
    forced = {"max_tokens": 3, "temperature": 0, "logit_bias": {str(time): 100}}
    text = client.completions.create(model="tiny", prompt="Once upon a", logprobs=0, **forced)  # type: ignore[arg-type]
    assert text.choices[0].text == " time time time"
    assert text.choices[0].logprobs is not None
    assert "".join(text.choices[0].logprobs.tokens or []) == text.choices[0].text
    echoed = client.completions.create(model="tiny", prompt="Once upon a", echo=True, **forced)  # type: ignore[arg-type]
    assert echoed.choices[0].text == "Once upon a time time time"
    streamed = client.completions.create(model="tiny", prompt="Once upon a", stream=True, **forced)  # type: ignore[arg-type]
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == " time time time"
    chat = client.chat.completions.create(model="tiny", messages=HELLO, **forced)  # type: ignore[arg-type]
    assert chat.choices[0].message.content == "time time time"


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


def test_null_for_a_nullable_flag_takes_its_default(daemon: RunningDaemon) -> None:
    """The openai package types ``stream``, ``echo`` and ``store`` as optional and sends a
    null it is given as it is."""
    with daemon.client() as http:
        chat = http.post(
            "/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": HELLO,
                "max_tokens": 2,
                "stream": None,
                "stream_options": None,
            },
        )
        text = http.post(
            "/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2, "echo": None}
        )
        stored = http.post(
            "/v1/responses",
            json={"model": "tiny", "input": "x", "max_output_tokens": 2, "store": None, "stream": None},
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["object"] == "chat.completion"  # not streamed
        assert text.status_code == 200, text.text
        assert text.json()["object"] == "text_completion"
        assert stored.status_code == 200, stored.text
        assert stored.json()["store"] is True
        assert http.get(f"/v1/responses/{stored.json()['id']}").status_code == 200  # stored: the default
