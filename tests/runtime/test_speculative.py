"""Speculative decoding: a draft model proposes, the model checks; greedy output is unchanged.

Real mlx-lm: the decoder against the plain solo decoder (the model as its own draft, and a
smaller random model with the same tokenizer), the hand-over into a batch mid-round, then
the daemon through the OpenAI client: equal greedy output with and without a draft, the
draft's work visible in its counters, company arriving mid-stream, a draft with another
tokenizer refused at load, and the request fields.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import RunningDaemon, serving
from tests.runtime.helpers import on_worker, run_alone

pytestmark = [pytest.mark.mlx]

TOKENS = 48


@pytest.fixture(scope="module")
def models(tiny_model_dir: Path, draft_model_dir: Path) -> tuple[Any, Any, Any, list[int]]:
    from mlx_lm import load

    model, tokenizer = load(str(tiny_model_dir))
    draft, _ = load(str(draft_model_dir))
    prompt = tokenizer.encode("a draft proposes and the model checks " * 10)
    return model, draft, tokenizer, prompt


def _solo(model: Any, prompt: list[int], draft: Any = None, num_draft: int = 3, **kwargs: Any) -> Any:
    from mlx_lm.generate import generation_stream
    from mlx_lm.models.cache import make_prompt_cache

    from mlxd.runtime.mlx.solo import SoloDecoder
    from mlxd.runtime.mlx.speculative import SpeculativeDecoder

    options: dict[str, Any] = {
        "sampler": kwargs.pop("sampler", None) or _greedy(),
        "processors": kwargs.pop("processors", []),
        "max_tokens": kwargs.pop("max_tokens", TOKENS),
        "stop_tokens": kwargs.pop("stop_tokens", frozenset()),
        "prefill_step_size": kwargs.pop("step", 64),
        "stream": generation_stream,
    }
    if draft is None:
        return SoloDecoder(model, prompt, make_prompt_cache(model), [], **options)
    return SpeculativeDecoder(
        model, draft, prompt, make_prompt_cache(model), [], num_draft=num_draft, **options
    )


def _greedy() -> Any:
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=0.0)


@pytest.mark.parametrize("num_draft", [1, 3, 6])
def test_greedy_tokens_equal_plain_decoding_with_either_draft(
    models: tuple[Any, Any, Any, list[int]], num_draft: int
) -> None:
    model, small, _, prompt = models
    plain = run_alone(_solo(model, prompt))
    assert len(plain) == TOKENS
    for draft in (model, small):
        decoder = _solo(model, prompt, draft, num_draft)
        assert run_alone(decoder) == plain
        # The cache holds exactly the tokens fed, whatever the rounds rejected.
        fed, cache = decoder.cache_state()
        assert cache[0].offset == len(fed) == len(prompt) + TOKENS - 1
    # The model drafting for itself agrees with itself: every proposal is accepted, so a
    # round yields num_draft + 1 tokens.
    decoder = _solo(model, prompt, model, num_draft)
    run_alone(decoder)
    assert decoder.stats.accepted == decoder.stats.proposed > 0
    assert decoder.stats.rounds <= -(-TOKENS // (num_draft + 1)) + 1


def test_penalties_see_the_same_context_as_plain_decoding(models: tuple[Any, Any, Any, list[int]]) -> None:
    from mlx_lm.sample_utils import make_logits_processors

    model, small, _, prompt = models

    def processors() -> list[Any]:
        return make_logits_processors(repetition_penalty=1.3, presence_penalty=0.8, presence_context_size=5)

    plain = run_alone(_solo(model, prompt, processors=processors()))
    assert run_alone(_solo(model, prompt, small, 4, processors=processors())) == plain
    assert run_alone(_solo(model, prompt, model, 4, processors=processors())) == plain


def test_stop_tokens_and_max_tokens_end_a_round_early(models: tuple[Any, Any, Any, list[int]]) -> None:
    model, _, _, prompt = models
    plain = run_alone(_solo(model, prompt))
    stop = plain[10]
    expected = plain[: plain.index(stop) + 1]
    decoder = _solo(model, prompt, model, 6, stop_tokens=frozenset({stop}))
    assert run_alone(decoder) == expected
    # The tokens the round accepted past the stop token are taken back from the cache.
    fed, cache = decoder.cache_state()
    assert fed == prompt + expected[:-1]
    assert cache[0].offset == len(fed)
    assert run_alone(_solo(model, prompt, model, 6, max_tokens=5)) == plain[:5]


@pytest.mark.parametrize("after_steps", [1, 6, 13])
def test_joining_a_batch_mid_round_keeps_every_greedy_token(
    models: tuple[Any, Any, Any, list[int]], after_steps: int
) -> None:
    """Company arrives: the sequence joins the batch without its draft; tokens still
    buffered from a round were never delivered and are recomputed, unchanged."""
    from mlx_lm.generate import BatchGenerator

    model, _, _, prompt = models
    plain = run_alone(_solo(model, prompt))
    decoder = _solo(model, prompt, model, 5, step=32)
    out: list[int] = []
    for _ in range(after_steps):
        response = decoder.step()
        if response is not None:
            out.append(response.token)
    response, state = decoder.detach()
    assert response is None
    assert state is not None
    assert state.cache is None or state.cache[0].offset == len(state.all_tokens)
    generator = BatchGenerator(model, completion_batch_size=4, prefill_batch_size=4, prefill_step_size=256)
    (uid,) = generator.insert(
        [state.prompt],
        max_tokens=[state.max_tokens],
        caches=[state.cache] if state.cache is not None else None,
        all_tokens=[state.all_tokens] if state.cache is not None else None,
        samplers=[decoder.sampler],
    )
    generator.insert([[1, 2, 3, 4, 5]], max_tokens=[TOKENS])
    while len(out) < TOKENS:
        _, responses = generator.next()
        out += [r.token for r in responses if r.uid == uid]
    generator.close()
    assert out == plain


def _draft_stats(running: RunningDaemon) -> dict[str, tuple[int, int, int]]:
    def read(worker: Any) -> dict[str, tuple[int, int, int]]:
        return {
            str(key[3]): (r.solo.draft_stats.rounds, r.solo.draft_stats.proposed, r.solo.draft_stats.accepted)
            for key, r in worker.runners.items()
            if r.options.draft is not None
        }

    return dict(on_worker(running, read))


@pytest.fixture(scope="module")
def spec_daemon(
    tiny_model_dir: Path,
    draft_model_dir: Path,
    thinking_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("speculative")
    with serving(
        root,
        f"""
[server]
port = 0
stream_interval = 0

[runtime]
keep_alive = "forever"
max_loaded_models = 4
prefill_step_size = 32

[defaults]
temperature = 0.0
max_tokens = {TOKENS}

[models.tiny]
model = "{tiny_model_dir}"

[models.self-draft]
model = "{tiny_model_dir}"
draft_model = "tiny"
num_draft_tokens = 4

[models.small-draft]
model = "{tiny_model_dir}"
draft_model = "{draft_model_dir}"

[models.foreign-draft]
model = "{tiny_model_dir}"
draft_model = "{thinking_model_dir}"
""",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(spec_daemon: RunningDaemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=spec_daemon.url + "/v1", api_key="unused", max_retries=0)


PROMPT = [{"role": "user", "content": "Draft a few tokens and let the model check them."}]


@pytest.mark.server
def test_greedy_with_a_draft_equals_greedy_without(
    client: openai.OpenAI, spec_daemon: RunningDaemon, tiny_model_dir: Path
) -> None:
    plain = client.chat.completions.create(model="tiny", messages=PROMPT)  # type: ignore[arg-type]
    assert plain.usage is not None
    assert plain.usage.completion_tokens == TOKENS
    for alias in ("self-draft", "small-draft"):
        drafted = client.chat.completions.create(model=alias, messages=PROMPT)  # type: ignore[arg-type]
        assert drafted.choices[0].message.content == plain.choices[0].message.content
        assert drafted.usage is not None
        assert drafted.usage.completion_tokens == TOKENS
        streamed = client.completions.create(model=alias, prompt="speculate " * 30, stream=True)
        reference = client.completions.create(model="tiny", prompt="speculate " * 30)
        assert "".join(chunk.choices[0].text for chunk in streamed) == reference.choices[0].text
    rounds, proposed, accepted = _draft_stats(spec_daemon)[f"draft={tiny_model_dir}@+"]
    # 4 proposals a round, all accepted: a forward pass of the model yields 5 tokens.
    assert rounds > 0
    assert accepted == proposed >= 3 * rounds


@pytest.mark.server
def test_num_draft_tokens_per_request(client: openai.OpenAI, spec_daemon: RunningDaemon) -> None:
    plain = client.completions.create(model="tiny", prompt="one two three")
    before = sum(v[0] for v in _draft_stats(spec_daemon).values())
    none = client.completions.create(
        model="self-draft", prompt="one two three", extra_body={"num_draft_tokens": 0}
    )
    assert none.choices[0].text == plain.choices[0].text
    assert sum(v[0] for v in _draft_stats(spec_daemon).values()) == before  # no round ran
    one = client.completions.create(
        model="self-draft", prompt="one two three", extra_body={"num_draft_tokens": 1}
    )
    assert one.choices[0].text == plain.choices[0].text
    for body, param in (
        ({"num_draft_tokens": 2}, "num_draft_tokens"),  # tiny has no draft model
        ({"num_draft_tokens": 33}, "num_draft_tokens"),
        ({"draft_model": "./elsewhere"}, "draft_model"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model="tiny", prompt="x", extra_body=body)
        assert caught.value.body["param"] == param  # type: ignore[index]
    assert client.completions.create(model="tiny", prompt="x", max_tokens=2).choices[0].text is not None


@pytest.mark.server
def test_a_draft_with_another_tokenizer_is_refused_naming_both(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.completions.create(model="foreign-draft", prompt="x")
    message = caught.value.body["message"]  # type: ignore[index]
    assert "tokenizer" in message
    assert message.startswith("tiny:")  # the model is named
    assert "draft model thinker" in message  # and so is the draft
    # The daemon goes on serving, the other aliases too.
    assert client.completions.create(model="small-draft", prompt="x", max_tokens=3).usage is not None


@pytest.mark.server
def test_company_arriving_mid_stream_changes_no_token(spec_daemon: RunningDaemon) -> None:
    """The drafted stream joins the batch without its draft when other requests come."""
    body = {
        "model": "self-draft",
        "prompt": "company arrives while this one speculates " * 8,
        "max_tokens": 120,
    }

    async def run() -> tuple[str, str]:
        async with httpx.AsyncClient(base_url=spec_daemon.url, timeout=120) as http:
            alone = (await http.post("/v1/completions", json={**body, "model": "tiny"})).json()
            parts: list[str] = []
            others: list[asyncio.Task[httpx.Response]] = []
            async with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    parts.append(json.loads(line[6:])["choices"][0]["text"])
                    if len(parts) == 7:
                        others = [
                            asyncio.create_task(
                                http.post(
                                    "/v1/completions", json={**body, "prompt": f"other {i}", "max_tokens": 30}
                                )
                            )
                            for i in range(2)
                        ]
            assert [(await task).status_code for task in others] == [200, 200]
            return alone["choices"][0]["text"], "".join(parts)

    alone, streamed = asyncio.run(run())
    assert streamed == alone
    assert spec_daemon.status()["active_sequences"] == 0
