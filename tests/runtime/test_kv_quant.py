"""A quantized KV cache (``kv_bits``) alone, in the batch, in the prompt cache and through the daemon.

Real mlx-lm on a tiny model whose attention heads are 64 wide (MLX quantizes groups of
32, 64 or 128 values). mlx-lm 0.32 quantizes only a sequence decoding alone; mlxd's batch
holds quantized caches too (``QuantizingBatchKVCache``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import RunningDaemon, serving
from tests.runtime.helpers import on_worker

pytestmark = [pytest.mark.mlx]

TOKENS = 32


@pytest.fixture(scope="module")
def loaded(kv_model_dir: Path) -> tuple[Any, Any]:
    from mlx_lm import load

    return load(str(kv_model_dir))  # type: ignore[return-value]


@pytest.mark.parametrize(("bits", "start"), [(4, 0), (8, 0), (4, 40)])
def test_alone_it_quantizes_as_mlx_lm_does(loaded: tuple[Any, Any], bits: int, start: int) -> None:
    import mlx.core as mx
    from mlx_lm.generate import generate_step, generation_stream
    from mlx_lm.models.cache import QuantizedKVCache, make_prompt_cache
    from mlx_lm.sample_utils import make_sampler

    from mlxd.runtime.mlx.solo import SoloDecoder
    from mlxd.runtime.specs import KvSettings

    model, tokenizer = loaded
    prompt = tokenizer.encode("quantized keys and values " * 6)
    reference = [
        int(t)
        for t, _ in generate_step(
            mx.array(prompt),
            model,
            max_tokens=TOKENS,
            prefill_step_size=16,
            kv_bits=bits,
            kv_group_size=64,
            quantized_kv_start=start,
        )
    ]
    decoder = SoloDecoder(
        model,
        prompt,
        make_prompt_cache(model),
        [],
        sampler=make_sampler(0.0),
        processors=[],
        max_tokens=TOKENS,
        stop_tokens=frozenset(),
        prefill_step_size=16,
        stream=generation_stream,
        kv=KvSettings(bits, 64, start),
    )
    out: list[int] = []
    while len(out) < TOKENS:
        response = decoder.step()
        if response is not None:
            out.append(response.token)
    assert out == reference
    assert all(type(layer) is QuantizedKVCache and layer.bits == bits for layer in decoder.cache)


def test_the_batch_quantizes_once_it_holds_start_tokens_and_hands_out_quantized_caches(
    loaded: tuple[Any, Any],
) -> None:
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.models.cache import KVCache, QuantizedKVCache, make_prompt_cache

    from mlxd.runtime.mlx.kv_layers import for_batch
    from mlxd.runtime.mlx.kv_quant import QuantizingBatchKVCache
    from mlxd.runtime.specs import KvSettings

    model, _ = loaded
    kv = KvSettings(8, 64, start=30)
    generator = BatchGenerator(model, completion_batch_size=8, prefill_batch_size=8, prefill_step_size=16)

    def add(prompt: list[int], count: int, cache: list[Any] | None = None) -> int:
        layers = for_batch(cache if cache is not None else make_prompt_cache(model), kv)
        return int(generator.insert([prompt], max_tokens=[count], caches=[layers])[0])

    outputs: dict[int, list[int]] = {add(list(range(1, 21)), 30): []}
    finished: dict[int, list[Any]] = {}
    quantized_at: int | None = None
    step = 0
    while len(finished) < 3:
        _, responses = generator.next()
        step += 1
        if step == 4:  # rows join a running batch: prefill, then extend
            outputs[add([5, 6, 7], 20)] = []
        if step == 9:
            outputs[add(list(range(40, 90)), 10)] = []
        batch = generator._generation_batch.prompt_cache
        if batch and quantized_at is None and batch[0].quantized:
            quantized_at = batch[0].size()
        assert all(isinstance(layer, QuantizingBatchKVCache) for layer in batch)
        for r in responses:
            outputs[r.uid].append(r.token)
            if r.finish_reason is not None:
                finished[r.uid] = r.prompt_cache
    assert [len(v) for v in outputs.values()] == [30, 20, 10]
    assert quantized_at is not None
    assert quantized_at >= kv.start
    assert all(type(layer) is QuantizedKVCache for cache in finished.values() for layer in cache)
    # A quantized cache extracted from the batch serves a new sequence (the prompt cache's
    # path), and a full-precision one merges into a quantized batch.
    cache = next(iter(finished.values()))
    uid = add([7], 5, cache)
    plain = make_prompt_cache(model)
    model(__import__("mlx.core").core.array([[3, 4, 5]]), cache=plain)
    assert type(plain[0]) is KVCache
    other = add([9], 5, plain)
    got: dict[int, int] = {uid: 0, other: 0}
    while min(got.values()) < 5:
        _, responses = generator.next()
        for r in responses:
            got[r.uid] += 1
    generator.close()


@pytest.fixture(scope="module")
def kv_daemon(
    kv_model_dir: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    with serving(
        tmp_path_factory.mktemp("kv"),
        f"""
[server]
port = 0

[runtime]
keep_alive = "forever"
max_loaded_models = 4
prompt_cache_disk_bytes = 0

[defaults]
temperature = 0.0

[models.full]
model = "{kv_model_dir}"
context_length = 256

[models.kv4]
model = "{kv_model_dir}"
context_length = 256
kv_bits = 4
quantized_kv_start = 0

[models.kv8]
model = "{kv_model_dir}"
context_length = 256
kv_bits = 8
kv_group_size = 32
quantized_kv_start = 64

[models.narrow]
model = "{tiny_model_dir}"
kv_bits = 4
""",
    ) as running:
        yield running


@pytest.mark.server
@pytest.mark.parametrize("alias", ["kv4", "kv8"])
def test_quantized_aliases_serve_alone_and_batched_within_the_context(
    kv_daemon: RunningDaemon, alias: str
) -> None:
    client = openai.OpenAI(base_url=kv_daemon.url + "/v1", api_key="unused", max_retries=0)
    prompt = "the cache holds quantized keys and values " * 8
    alone = client.completions.create(model=alias, prompt=prompt, max_tokens=40)
    assert alone.usage is not None
    prompt_tokens = alone.usage.prompt_tokens
    assert 150 < prompt_tokens < 256
    # Filling the context to its last token: no more is generated, nothing breaks.
    full = client.completions.create(model=alias, prompt=prompt, max_tokens=256 - prompt_tokens)
    assert full.usage is not None
    assert full.usage.completion_tokens == 256 - prompt_tokens
    assert full.choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=alias, prompt=prompt, max_tokens=257 - prompt_tokens)

    async def batch() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=kv_daemon.url, timeout=120) as http:
            replies = await asyncio.gather(
                *[
                    http.post(
                        "/v1/completions", json={"model": alias, "prompt": f"{prompt} {i}", "max_tokens": 40}
                    )
                    for i in range(4)
                ]
            )
            return [r.json() for r in replies]

    replies = asyncio.run(batch())
    assert [r["usage"]["completion_tokens"] for r in replies] == [40] * 4
    # Temperature 0 is deterministic, alone or batched with the same company.
    again = client.completions.create(model=alias, prompt=prompt, max_tokens=40)
    assert again.choices[0].text == alone.choices[0].text


@pytest.mark.server
def test_cached_prompts_of_a_4_bit_alias_take_about_a_quarter_of_the_memory(kv_daemon: RunningDaemon) -> None:
    client = openai.OpenAI(base_url=kv_daemon.url + "/v1", api_key="unused", max_retries=0)
    prompt = "how much memory does a cached prompt take " * 8
    for alias in ("full", "kv4"):
        client.completions.create(model=alias, prompt=prompt, max_tokens=8)

    def entries(worker: Any) -> dict[str, list[tuple[str, int]]]:
        out = {}
        for key, runner in worker.runners.items():
            index = runner.prompt_cache._index
            out[str(key[3])] = [
                (type(index.get(k)[0]).__name__, sum(int(layer.nbytes) for layer in index.get(k)))
                for k in index
            ]
        return out

    # Three units over the same weights (full, kv4, kv8): the weights are in memory, and
    # counted, once.
    sizes = [m["memory_bytes"] for m in kv_daemon.status()["models"] if m["alias"] in ("full", "kv4", "kv8")]  # type: ignore[index, union-attr, attr-defined]
    assert len(sizes) == 3
    assert sorted(sizes)[:2] == [0, 0]
    assert max(sizes) > 0
    found = on_worker(kv_daemon, entries)
    (full_type, full_bytes) = found["None"][-1]
    (kv_type, kv_bytes) = found["kv4g64s0"][-1]
    assert (full_type, kv_type) == ("KVCache", "QuantizedKVCache")
    # 4-bit values plus a float scale and bias per 64 values: 0.1875 of float32's... of
    # the same cache in full precision (float32 here), allowing for buffer rounding.
    assert kv_bytes < 0.3 * full_bytes


@pytest.mark.server
def test_a_group_size_that_does_not_divide_the_heads_is_refused(kv_daemon: RunningDaemon) -> None:
    client = openai.OpenAI(base_url=kv_daemon.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        client.completions.create(model="narrow", prompt="x")
    assert "kv_group_size 64" in caught.value.body["message"]  # type: ignore[index]
    assert client.completions.create(model="kv4", prompt="x", max_tokens=2).usage is not None


@pytest.mark.parametrize("start", [0, 40])
def test_a_quantized_sequence_joins_the_batch_and_speculates_unchanged(
    loaded: tuple[Any, Any], start: int
) -> None:
    """Alone, drafted by itself, or moved into a quantizing batch mid-decode: the same tokens."""
    from mlx_lm.generate import BatchGenerator, generation_stream
    from mlx_lm.models.cache import QuantizedKVCache, make_prompt_cache
    from mlx_lm.sample_utils import make_sampler

    from mlxd.runtime.mlx.kv_layers import for_batch
    from mlxd.runtime.mlx.solo import SoloDecoder
    from mlxd.runtime.mlx.speculative import SpeculativeDecoder
    from mlxd.runtime.specs import KvSettings

    model, tokenizer = loaded
    prompt = tokenizer.encode("quantized keys and values " * 6)
    kv = KvSettings(4, 64, start)
    options: dict[str, Any] = {
        "sampler": make_sampler(0.0),
        "processors": [],
        "max_tokens": TOKENS,
        "stop_tokens": frozenset(),
        "prefill_step_size": 16,
        "stream": generation_stream,
        "kv": kv,
    }

    def run(decoder: Any, steps: int | None = None) -> list[int]:
        out: list[int] = []
        while len(out) < TOKENS and (steps is None or steps > 0):
            response = decoder.step()
            if response is not None:
                out.append(response.token)
            steps = None if steps is None else steps - 1
        return out

    alone = run(SoloDecoder(model, prompt, make_prompt_cache(model), [], **options))
    drafted = SpeculativeDecoder(model, model, prompt, make_prompt_cache(model), [], num_draft=3, **options)
    assert run(drafted) == alone
    decoder = SoloDecoder(model, prompt, make_prompt_cache(model), [], **options)
    out = run(decoder, steps=10)
    response, state = decoder.detach()
    if response is not None:
        out.append(response.token)
    assert state is not None
    assert state.cache is not None
    assert all(type(layer) is QuantizedKVCache for layer in state.cache)
    generator = BatchGenerator(model, completion_batch_size=4, prefill_batch_size=4, prefill_step_size=16)
    (uid,) = generator.insert(
        [state.prompt],
        max_tokens=[state.max_tokens],
        caches=[for_batch(state.cache, kv)],
        all_tokens=[state.all_tokens],
        samplers=[decoder.sampler],
    )
    while len(out) < TOKENS:
        _, responses = generator.next()
        out += [r.token for r in responses if r.uid == uid]
    generator.close()
    assert out == alone
