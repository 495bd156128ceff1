"""Constrained decoding: every output parses and validates, rows mix freely, EOS ends each one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema_rs
import mlx.core as mx
import mlx_lm
import pytest
from mlx_lm.generate import BatchGenerator

from mlxd.errors import RequestError
from mlxd.output.tool_calls import tool_call_schema
from mlxd.runtime.grammars import MAX_SCHEMA_DEPTH, GrammarError, json_grammar, validate_schema
from mlxd.runtime.mlx.constrained import GrammarCache, make_constraint
from tests.schemas import PET

pytestmark = pytest.mark.mlx

QUESTIONS = ["Describe a pet as JSON.", "Who owns the cat?", "List three tags.", "Tell me about the dog."]

Row = tuple[Callable[[mx.array, mx.array], mx.array] | None, float, int]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    """The tiny model loaded by mlx-lm: (model, TokenizerWrapper)."""
    return mlx_lm.load(str(tiny_model_dir))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def grammar_cache() -> GrammarCache:
    return GrammarCache()


def seeded_sampler(temperature: float, seed: int) -> Callable[[mx.array], mx.array]:
    """A row's own random key, so rows sample independently of the batch."""
    key = mx.random.key(seed)

    def sample(logprobs: mx.array) -> mx.array:
        nonlocal key
        key, step = mx.random.split(key)
        return mx.random.categorical(logprobs * (1.0 / temperature), key=step)

    return sample


def generate(tiny: tuple[Any, Any], rows: list[Row], max_tokens: list[int]) -> list[tuple[list[int], str]]:
    """Decode all rows in one BatchGenerator: each row's tokens (EOS dropped) and finish reason."""
    model, tokenizer = tiny
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], add_generation_prompt=True
        )
        for i in range(len(rows))
    ]
    generator = BatchGenerator(
        model, stop_tokens=[[t] for t in sorted(tokenizer.eos_token_ids)], completion_batch_size=32
    )
    uids = generator.insert(
        prompts,
        max_tokens=max_tokens,
        samplers=[seeded_sampler(temperature, seed) for _, temperature, seed in rows],
        logits_processors=[[proc] if proc else [] for proc, _, _ in rows],
    )
    tokens: dict[int, list[int]] = {uid: [] for uid in uids}
    finished: dict[int, str] = {}
    while len(finished) < len(uids):
        for response in generator.next_generated():
            if response.token not in tokenizer.eos_token_ids:
                tokens[response.uid].append(response.token)
            if response.finish_reason:
                finished[response.uid] = response.finish_reason
    generator.close()
    return [(tokens[uid], finished[uid]) for uid in uids]


def allowed_ids(logits: mx.array) -> set[int]:
    """The ids a processor left unmasked, after checking it produced no NaN."""
    assert not mx.isnan(logits).any().item()
    values: list[float] = logits[0].tolist()  # type: ignore[assignment]
    return {i for i, value in enumerate(values) if value > -1e20}


def constrained_rows(tiny: tuple[Any, Any], cache: GrammarCache, grammar: str, seeds: range) -> list[Row]:
    model, tokenizer = tiny
    temperatures = (0.6, 0.8, 1.0, 1.3)
    return [
        (make_constraint(tokenizer, grammar, model.args.vocab_size, cache), temperatures[seed % 4], seed)
        for seed in seeds
    ]


def test_a_hundred_generations_all_parse_validate_and_stop(
    tiny: tuple[Any, Any], grammar_cache: GrammarCache
) -> None:
    validator = jsonschema_rs.validator_for(PET)
    grammar = json_grammar(PET)
    results = []
    for batch in range(4):
        rows = constrained_rows(tiny, grammar_cache, grammar, range(batch * 25, batch * 25 + 25))
        results += generate(tiny, rows, [256] * len(rows))
    assert len(results) == 100
    for tokens, finish in results:
        text = tiny[1].decode(tokens)
        assert finish == "stop", text
        validator.validate(json.loads(text))
    assert len({tuple(tokens) for tokens, _ in results}) > 90, "the seeds should give distinct outputs"


def test_json_object_mode_always_yields_an_object(tiny: tuple[Any, Any], grammar_cache: GrammarCache) -> None:
    """Any object: keys and strings are unbounded, so a random model may still be inside
    one at ``max_tokens``; the server reports that cut as finish "length"."""
    rows = constrained_rows(tiny, grammar_cache, json_grammar(None), range(32))
    results = generate(tiny, rows, [512] * len(rows))
    stopped = [tiny[1].decode(tokens) for tokens, finish in results if finish == "stop"]
    assert len(stopped) >= 24
    for text in stopped:
        assert isinstance(json.loads(text), dict)
    for tokens, finish in results:
        assert finish == "stop" or tiny[1].decode(tokens).startswith("{")


def test_constrained_and_free_rows_decode_together(
    tiny: tuple[Any, Any], grammar_cache: GrammarCache
) -> None:
    validator = jsonschema_rs.validator_for(PET)
    constrained = constrained_rows(tiny, grammar_cache, json_grammar(PET), range(4))
    free: list[Row] = [(None, 0.8, seed) for seed in range(4)]
    rows = [row for pair in zip(constrained, free, strict=True) for row in pair]
    results = generate(tiny, rows, [256, 48] * 4)
    for tokens, finish in results[0::2]:
        assert finish == "stop"
        validator.validate(json.loads(tiny[1].decode(tokens)))
    for tokens, finish in results[1::2]:
        assert (finish, len(tokens)) == ("length", 48), "a free row must not be constrained"
        assert not tiny[1].decode(tokens).startswith('{"name": ')


def test_processor_forces_eos_when_complete_and_after_it(
    tiny: tuple[Any, Any], grammar_cache: GrammarCache
) -> None:
    model, tokenizer = tiny
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    width = model.args.vocab_size + 40  # a padded vocabulary: the logits are wider than the tokenizer
    proc = make_constraint(tokenizer, json_grammar(schema), width, grammar_cache)
    logits = mx.zeros((1, width))
    context = [5, 6, 7, 8]  # whatever mlx-lm passes first is prompt, never consumed
    body = tokenizer.encode('{"a": 12}', add_special_tokens=False)

    assert allowed_ids(proc(mx.array(context), logits)) <= set(range(model.args.vocab_size))
    for token in body:
        context.append(token)
        out = proc(mx.array(context), logits)
    assert allowed_ids(out) == set(tokenizer.eos_token_ids), "a complete object must end with EOS"
    context.append(tokenizer.eos_token_id)
    assert allowed_ids(proc(mx.array(context), logits)) == set(tokenizer.eos_token_ids)


def test_a_rejected_token_leaves_only_eos(tiny: tuple[Any, Any], grammar_cache: GrammarCache) -> None:
    model, tokenizer = tiny
    proc = make_constraint(tokenizer, json_grammar(PET), model.args.vocab_size, grammar_cache)
    logits = mx.zeros((1, model.args.vocab_size))
    proc(mx.array([1]), logits)
    wrong = tokenizer.encode("hello", add_special_tokens=False)[0]
    out = proc(mx.array([1, wrong]), logits)
    assert allowed_ids(out) == set(tokenizer.eos_token_ids)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "string", "format": "postcode"}, "postcode"),
        ({"$ref": "https://example.com/pet.json"}, "example.com"),
        ({"type": "integer", "minimum": 5, "maximum": 3}, "minimum"),
        ({"type": "pet"}, "pet"),
        ([{"type": "string"}], "list"),
    ],
)
def test_unsupported_schemas_are_rejected_by_name(schema: Any, named: str) -> None:
    with pytest.raises(GrammarError, match=named) as caught:
        validate_schema(schema)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, RequestError)
    assert caught.value.param == "response_format"


def test_oversized_and_overdeep_schemas_are_rejected() -> None:
    wide = {"type": "object", "properties": {f"field_{i:05d}": {"type": "string"} for i in range(3000)}}
    with pytest.raises(GrammarError, match="larger than 64 KB"):
        json_grammar(wide)
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH):
        deep = {"type": "array", "items": deep}
    with pytest.raises(GrammarError, match="deeper than"):
        json_grammar(deep)


def test_cache_shares_compiled_grammars_and_evicts_the_oldest(tiny: tuple[Any, Any]) -> None:
    tokenizer = tiny[1]
    cache = GrammarCache(max_entries=2)
    grammars = [
        json_grammar({"type": "object", "properties": {f"k{i}": {"type": "integer"}}}) for i in range(3)
    ]
    first = cache.compiled(tokenizer, grammars[0])
    assert (
        cache.compiled(tokenizer, json_grammar({"type": "object", "properties": {"k0": {"type": "integer"}}}))
        is first
    )
    assert cache.lltokenizer(tokenizer) is cache.lltokenizer(tokenizer)
    cache.compiled(tokenizer, grammars[1])
    cache.compiled(tokenizer, grammars[2])
    assert len(cache) == 2
    assert cache.compiled(tokenizer, grammars[0]) is not first


def test_tool_call_schema_names_one_of_the_tools(tiny: tuple[Any, Any], grammar_cache: GrammarCache) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 10}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        },
        {"type": "function", "function": {"name": "get_time"}},
    ]
    schema = tool_call_schema(tools)
    validator = jsonschema_rs.validator_for(schema)
    rows = constrained_rows(tiny, grammar_cache, json_grammar(schema), range(8))
    for tokens, finish in generate(tiny, rows, [128] * len(rows)):
        assert finish == "stop"
        call = json.loads(tiny[1].decode(tokens))
        validator.validate(call)
        assert call["name"] == "get_weather" or call == {"name": "get_time", "arguments": {}}
    with pytest.raises(RequestError):
        tool_call_schema([])


def test_per_token_overhead_is_reported(
    tiny: tuple[Any, Any], grammar_cache: GrammarCache, capsys: pytest.CaptureFixture[str]
) -> None:
    """Constrained rows against free rows of the same lengths, best of three; printed, never asserted."""
    grammar = json_grammar(PET)
    seeds = range(100, 108)
    lengths = [
        len(tokens) + 1
        for tokens, _ in generate(tiny, constrained_rows(tiny, grammar_cache, grammar, seeds), [256] * 8)
    ]
    constrained_s, free_s = [], []
    for _ in range(3):
        rows = constrained_rows(tiny, grammar_cache, grammar, seeds)
        start = time.perf_counter()
        generate(tiny, rows, [256] * 8)
        constrained_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        generate(tiny, [(None, 0.8, seed) for seed in seeds], lengths)
        free_s.append(time.perf_counter() - start)
    total = sum(lengths)
    with capsys.disabled():
        print(
            f"\nconstrained decoding, tiny model, 8 rows, {total} tokens: "
            f"{min(constrained_s) / total * 1e6:.0f} µs/token constrained, "
            f"{min(free_s) / total * 1e6:.0f} µs/token free, "
            f"overhead {(min(constrained_s) - min(free_s)) / total * 1e6:.0f} µs/token"
        )
