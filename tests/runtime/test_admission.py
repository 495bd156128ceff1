"""Admission's checks, on a fake model's facts (pure Python: no model, no server)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from mlxd.errors import CapacityError, ContextLengthError, RequestError
from mlxd.runtime.admission import INLINE_INPUT_CHARS, Admission, check_capacity, check_limits
from mlxd.runtime.formats import reasoning_format, tool_format
from mlxd.runtime.requests import (
    ChatPrompt,
    Constraint,
    EmbeddingRequest,
    GenerationRequest,
    SamplingParams,
    TextPrompt,
)
from mlxd.runtime.specs import ModelSpec, RuntimeSettings
from tests.fakes.engine import FakeModel, FakeTokenizer


def request(**fields: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "request_id": "r",
        "alias": "tiny",
        "spec": ModelSpec(source="org/tiny"),
        "prompt": TextPrompt(text="a b c"),
        "max_tokens": 10,
    }
    return GenerationRequest(**{**base, **fields})


MODEL = FakeModel(memory_bytes=0, context_length=32, vocab_size=100)


def test_max_tokens_is_trimmed_to_the_room_the_context_leaves() -> None:
    assert check_limits(request(max_tokens=10), MODEL, [1] * 20) == 10
    assert check_limits(request(max_tokens=50), MODEL, [1] * 20) == 12


def test_an_explicit_max_tokens_beyond_the_context_is_refused() -> None:
    with pytest.raises(ContextLengthError) as refused:
        check_limits(request(max_tokens=50, max_tokens_explicit=True), MODEL, [1] * 20)
    assert refused.value.param == "max_tokens"


def test_a_prompt_that_fills_the_context_is_refused() -> None:
    with pytest.raises(ContextLengthError, match="32") as refused:
        check_limits(request(), MODEL, [1] * 32)
    assert refused.value.code == "context_length_exceeded"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"sampling": SamplingParams(logit_bias=((100, 1.0),))}, "logit_bias"),
        ({"sampling": SamplingParams(top_k=101)}, "top_k"),
        ({"prompt": TextPrompt(tokens=(1, 100))}, "prompt"),
    ],
    ids=["logit-bias", "top-k", "prompt-token"],
)
def test_ids_outside_the_vocabulary_are_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestError) as refused:
        check_limits(request(**fields), MODEL, [1, 2])
    assert refused.value.param == param
    check_limits(request(sampling=SamplingParams(logit_bias=((99, 1.0),), top_k=100)), MODEL, [1, 2])


def test_an_empty_prompt_is_refused() -> None:
    with pytest.raises(RequestError, match="empty"):
        check_limits(request(), MODEL, [])


def test_capacity_is_the_batch_plus_the_queue_and_says_when_to_retry() -> None:
    settings = RuntimeSettings(max_batch_size=4, max_queue=2)
    check_capacity("tiny", 6, settings)
    with pytest.raises(CapacityError) as refused:
        check_capacity("tiny", 9, settings)
    assert refused.value.retry_after == 3  # 9 sequences, 4 at a time


def test_tools_need_a_model_with_a_tool_format() -> None:
    chat = ChatPrompt(({"role": "user", "content": "hi"},), tools=({"type": "function"},))
    with pytest.raises(RequestError) as refused:
        tool_format(request(prompt=chat), FakeTokenizer())
    assert refused.value.param == "tools"
    assert (
        tool_format(request(prompt=ChatPrompt(({"role": "user", "content": "hi"},))), FakeTokenizer()) is None
    )


class ThinkingTokenizer(FakeTokenizer):
    has_thinking = True
    think_start, think_end = "<think>", "</think>"

    def __init__(self, tail: str) -> None:
        self.tail = tail

    def decode(self, tokens: list[int]) -> str:
        return self.tail


def test_a_template_that_opened_the_thinking_block_starts_inside_it() -> None:
    chat = request(prompt=ChatPrompt(({"role": "user", "content": "hi"},)))
    opened = reasoning_format(chat, ThinkingTokenizer("assistant\n<think>\n"), [1])
    closed = reasoning_format(chat, ThinkingTokenizer("<think></think>answer"), [1])
    assert opened is not None
    assert opened.starts_inside
    assert closed is not None
    assert not closed.starts_inside
    assert reasoning_format(request(), ThinkingTokenizer("<think>"), [1]) is None  # text prompts


def test_admit_tokenizes_checks_and_compiles_off_the_loop() -> None:
    async def main() -> None:
        admission = Admission()
        try:
            chat = ChatPrompt(({"role": "user", "content": "one two three"},))
            admitted = await admission.admit(request(prompt=chat, constraint=Constraint(None)), MODEL)
            assert len(admitted.tokens) == 6  # the fake template: open, three words, close, reply
            assert admitted.max_tokens == 10
            assert admitted.grammar is not None
            assert admitted.tool_format is None
            bad = Constraint({"type": "object", "not": {}})
            with pytest.raises(RequestError, match="not"):
                await admission.admit(request(prompt=chat, constraint=bad), MODEL)
        finally:
            admission.close()

    asyncio.run(main())


def test_one_short_embedding_input_is_tokenized_on_the_loop_the_rest_off_it() -> None:
    threads: list[str] = []

    class Recording(FakeTokenizer):
        def encode(self, text: str) -> list[int]:
            threads.append(threading.current_thread().name)
            return super().encode(text)

    model = FakeModel(memory_bytes=0, context_length=10_000, vocab_size=100, tokenizer=Recording())

    def embedding(*inputs: str) -> EmbeddingRequest:
        return EmbeddingRequest(request_id="r", alias="e", spec=ModelSpec(source="org/e"), inputs=inputs)

    async def main() -> list[str]:
        admission = Admission()
        try:
            assert (await admission.admit_embeddings(embedding("a b"), model)).tokens[0] != []
            await admission.admit_embeddings(embedding("a " * INLINE_INPUT_CHARS), model)
            await admission.admit_embeddings(embedding("a b", "c d"), model)
        finally:
            admission.close()
        return threads

    loop_thread = threading.current_thread().name
    short, long, two, other = asyncio.run(main())
    assert short == loop_thread
    assert long.startswith("mlxd-tokenize")
    assert two == other
    assert two.startswith("mlxd-tokenize")
