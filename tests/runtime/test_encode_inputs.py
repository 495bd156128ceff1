"""Embedding inputs are tokenized together where the tokenizer allows it, to the same ids as
one at a time, in the request's order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlxd.runtime.demo_tokenizer import write_tokenizer, write_wordpiece_tokenizer
from mlxd.runtime.prompts import encode_inputs

TEXTS = ["", "hello there", "Ünïcode — and emoji 🙂", "words " * 60, "\n\nnew\nlines\n", "[CLS] literal"]


def loaded(dest: Path, write: Any, **kwargs: Any) -> Any:
    """The tokenizer as the daemon holds it: mlx-lm's wrapper around transformers' own."""
    from mlx_lm.utils import load_tokenizer

    dest.mkdir()
    write(dest, **kwargs)
    return load_tokenizer(dest, {"trust_remote_code": False})


@pytest.fixture(
    scope="module",
    params=[
        pytest.param((write_tokenizer, {"chat_template": False, "max_length": 4096}), id="bpe"),
        pytest.param((write_wordpiece_tokenizer, {"max_length": 512}), id="wordpiece"),
    ],
)
def tokenizer(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    write, kwargs = request.param
    return loaded(tmp_path_factory.mktemp("tok") / "t", write, **kwargs)


def test_batched_ids_equal_one_at_a_time(tokenizer: Any) -> None:
    inner = tokenizer._tokenizer
    one_by_one = [list(tokenizer.encode(text)) for text in TEXTS]
    calls: list[str] = []

    def counted(text: str, **kwargs: Any) -> Any:
        calls.append(text)
        return type(inner).encode(inner, text, **kwargs)

    inner.encode = counted  # seen by one-at-a-time encoding, not by the batch call
    try:
        assert encode_inputs(tokenizer, TEXTS) == one_by_one
        assert calls == []
        assert encode_inputs(tokenizer, TEXTS[1:2]) == one_by_one[1:2]
        assert calls == TEXTS[1:2]  # a single text needs no batch
    finally:
        del inner.encode


def test_token_ids_and_texts_keep_their_order(tokenizer: Any) -> None:
    inputs: list[str | list[int]] = ["alpha beta", [5, 6, 7], "gamma", [], [1]]
    got = encode_inputs(tokenizer, inputs)
    assert got == [list(tokenizer.encode("alpha beta")), [5, 6, 7], list(tokenizer.encode("gamma")), [], [1]]


def test_a_tokenizer_with_its_own_encode_keeps_it(tokenizer: Any) -> None:
    """A tokenizer class that rewrites text in ``encode`` (as mlx-lm's newline tokenizer
    does) is asked one text at a time, so its rewriting is never skipped."""
    inner = tokenizer._tokenizer
    base = type(inner)
    own = type(
        "Shouting", (base,), {"encode": lambda self, text, **kw: base.encode(self, text.upper(), **kw)}
    )
    tokenizer._tokenizer = inner.__class__.__new__(own)
    tokenizer._tokenizer.__dict__.update(inner.__dict__)
    try:
        got = encode_inputs(tokenizer, ["quiet words", "more"])
    finally:
        tokenizer._tokenizer = inner
    assert got == [list(inner.encode("QUIET WORDS")), list(inner.encode("MORE"))]


def test_a_wrapper_with_its_own_encode_keeps_it(tokenizer: Any) -> None:
    """A wrapper class of its own ``encode`` around a plain tokenizer is asked too."""

    class Wrapper:
        def __init__(self, inner: Any) -> None:
            self._tokenizer = inner

        def encode(self, text: str) -> list[int]:
            return [len(text)]

    assert encode_inputs(Wrapper(tokenizer._tokenizer), ["ab", "abc"]) == [[2], [3]]
