"""A lone sequence decodes outside the batch and joins it later without changing a token.

Real mlx-lm on the tiny model: the solo decoder against mlx-lm's own ``generate_step``,
the hand-over into a ``BatchGenerator`` mid-decode and mid-prefill, and the daemon doing
the same when company arrives during a stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.conftest import RunningDaemon, serving
from tests.runtime.helpers import run_alone

pytestmark = [pytest.mark.mlx]

TOKENS = 40


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> tuple[Any, Any, list[int]]:
    from mlx_lm import load

    model, tokenizer = load(str(tiny_model_dir))
    prompt = tokenizer.encode("a lone sequence decodes outside the batch " * 12)
    return model, tokenizer, prompt


def _reference(model: Any, prompt: list[int], sampler: Any) -> list[int]:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    return [int(t) for t, _ in generate_step(mx.array(prompt), model, max_tokens=TOKENS, sampler=sampler)]


def _decoder(
    model: Any,
    prompt: list[int],
    sampler: Any,
    step: int = 256,
    processors: list[Any] | None = None,
    stop_tokens: frozenset[int] = frozenset(),
    max_tokens: int = TOKENS,
) -> Any:
    from mlx_lm.generate import generation_stream
    from mlx_lm.models.cache import make_prompt_cache

    from mlxd.runtime.mlx.solo import SoloDecoder

    return SoloDecoder(
        model,
        prompt,
        make_prompt_cache(model),
        [],
        sampler=sampler,
        processors=processors or [],
        max_tokens=max_tokens,
        stop_tokens=stop_tokens,
        prefill_step_size=step,
        stream=generation_stream,
    )


def _continue_in_batch(model: Any, decoder: Any, after_steps: int) -> list[int]:
    """Decode ``after_steps`` calls alone, hand over, finish in a BatchGenerator."""
    from mlx_lm.generate import BatchGenerator

    out: list[int] = []
    for _ in range(after_steps):
        response = decoder.step()
        if response is not None:
            out.append(response.token)
    response, state = decoder.detach()
    if response is not None:
        out.append(response.token)
    assert state is not None
    stop = [[t] for t in sorted(decoder.stop_tokens)]
    generator = BatchGenerator(
        model, stop_tokens=stop, completion_batch_size=4, prefill_batch_size=4, prefill_step_size=256
    )
    (uid,) = generator.insert(
        [state.prompt],
        max_tokens=[state.max_tokens],
        caches=[state.cache],
        all_tokens=[state.all_tokens],
        samplers=[decoder.sampler],
        logits_processors=[decoder.processors],
    )
    # A batch-mate so the sequence really decodes inside a batch of two.
    generator.insert([[1, 2, 3, 4, 5]], max_tokens=[TOKENS])
    while True:
        _, responses = generator.next()
        for r in responses:
            if r.uid == uid:
                out.append(r.token)
                if r.finish_reason is not None:
                    generator.close()
                    return out


def _greedy() -> Any:
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=0.0)


def _seeded() -> Any:
    from mlxd.runtime.mlx.sampling import make_sampler
    from mlxd.runtime.requests import SamplingParams

    return make_sampler(SamplingParams(temperature=1.0, seed=1234))


def test_alone_it_decodes_exactly_what_generate_step_does(loaded: tuple[Any, Any, list[int]]) -> None:
    model, _, prompt = loaded
    reference = _reference(model, prompt, _greedy())
    assert len(reference) == TOKENS
    assert run_alone(_decoder(model, prompt, _greedy())) == reference
    # Chunked prefill (many small steps) changes nothing either.
    assert run_alone(_decoder(model, prompt, _greedy(), step=16)) == reference


def test_alone_an_unseeded_sampler_draws_what_generate_step_draws_with_it(
    loaded: tuple[Any, Any, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lone sequence draws through the compiled one-row draw, the batch and
    ``generate_step`` through the plain operations: from one random state, the same tokens."""
    import mlx.core as mx

    from mlxd.runtime.mlx.sampling import Categorical, make_sampler
    from mlxd.runtime.requests import SamplingParams

    model, _, prompt = loaded
    sampler = make_sampler(SamplingParams(temperature=1.5, top_p=0.95))
    assert isinstance(sampler, Categorical)
    mx.random.seed(7)
    reference = _reference(model, prompt, sampler)
    assert len(set(reference)) > 5  # really sampled, not one token over and over
    one_row = Categorical.one_row
    rows: list[int] = []

    def counted(self: Categorical, logprobs: Any) -> Any:
        rows.append(logprobs.shape[0])
        return one_row(self, logprobs)

    monkeypatch.setattr(Categorical, "one_row", counted)
    mx.random.seed(7)
    assert run_alone(_decoder(model, prompt, sampler)) == reference
    assert rows == [1] * TOKENS  # every token through the one-row draw


@pytest.mark.parametrize("after_steps", [1, 7, 25])
def test_joining_a_batch_mid_decode_keeps_every_greedy_token(
    loaded: tuple[Any, Any, list[int]], after_steps: int
) -> None:
    model, _, prompt = loaded
    reference = _reference(model, prompt, _greedy())
    assert _continue_in_batch(model, _decoder(model, prompt, _greedy()), after_steps) == reference


def test_joining_a_batch_keeps_a_seeded_samplers_draws(loaded: tuple[Any, Any, list[int]]) -> None:
    model, _, prompt = loaded
    alone = run_alone(_decoder(model, prompt, _seeded()))
    assert _continue_in_batch(model, _decoder(model, prompt, _seeded()), 9) == alone


def test_joining_a_batch_mid_prefill_keeps_every_token(loaded: tuple[Any, Any, list[int]]) -> None:
    model, _, prompt = loaded
    reference = _reference(model, prompt, _greedy())
    decoder = _decoder(model, prompt, _greedy(), step=16)
    # Two prefill chunks of 16, then the hand-over with most of the prompt unfed.
    assert _continue_in_batch(model, decoder, 2) == reference


def test_constrained_output_survives_the_join(loaded: tuple[Any, Any, list[int]]) -> None:
    from mlxd.runtime.grammars import json_grammar
    from mlxd.runtime.mlx.constrained import GrammarCache, make_constraint
    from tests.schemas import PET

    model, tokenizer, _ = loaded
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "A pet as JSON."}], add_generation_prompt=True
    )
    grammar, cache, eos = json_grammar(PET), GrammarCache(), frozenset(tokenizer.eos_token_ids)

    def decoder() -> Any:
        processor = make_constraint(tokenizer, grammar, model.args.vocab_size, cache)
        return _decoder(model, prompt, _seeded(), processors=[processor], stop_tokens=eos, max_tokens=400)

    alone = run_alone(decoder())
    assert alone[-1] in eos  # the grammar completed the object and ended the sequence
    assert jsonschema_rs.validator_for(PET).is_valid(json.loads(tokenizer.decode(alone[:-1])))
    assert _continue_in_batch(model, decoder(), 6) == alone


@pytest.fixture(scope="module")
def solo_daemon(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("solo")
    with serving(
        root,
        f"""
[server]
port = 0
stream_interval = 0

[runtime]
keep_alive = "forever"
prefill_step_size = 32

[defaults]
temperature = 0.0

[models.tiny]
model = "{tiny_model_dir}"
""",
    ) as running:
        yield running


@pytest.mark.server
def test_a_stream_joined_by_other_requests_mid_way_is_unchanged(solo_daemon: RunningDaemon) -> None:
    prompt = "company arrives while this one decodes alone " * 20
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 160}

    async def run() -> tuple[str, str, list[str]]:
        async with httpx.AsyncClient(base_url=solo_daemon.url, timeout=120) as http:
            alone = (await http.post("/v1/completions", json=body)).json()["choices"][0]["text"]
            parts: list[str] = []
            others: list[asyncio.Task[httpx.Response]] = []
            async with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
                async for line in response.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    parts.append(json.loads(line[6:])["choices"][0]["text"])
                    if len(parts) == 5:  # decoding alone by now: send company
                        others = [
                            asyncio.create_task(
                                http.post(
                                    "/v1/completions", json={**body, "prompt": f"other {i}", "max_tokens": 40}
                                )
                            )
                            for i in range(3)
                        ]
            texts = [(await task).json()["choices"][0]["text"] for task in others]
            return alone, "".join(parts), texts

    before = int(solo_daemon.status()["largest_batch"])  # type: ignore[call-overload]
    alone, streamed, others = asyncio.run(run())
    assert streamed == alone
    assert len(others) == 3
    assert all(others)
    # The stream and its company decoded together: a batch of more than one ran.
    assert int(solo_daemon.status()["largest_batch"]) >= max(2, before)  # type: ignore[call-overload]
    assert solo_daemon.status()["active_sequences"] == 0
