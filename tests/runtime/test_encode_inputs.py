"""Embedding inputs are tokenized together where the tokenizer allows it, to the same ids as
one at a time, in the request's order; a tokenizer that changes how one text is encoded is
asked one text at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mlxd.runtime.demo_tokenizer import write_tokenizer, write_wordpiece_tokenizer
from mlxd.runtime.prompts import encode_inputs

pytestmark = pytest.mark.mlx

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


@contextmanager
def counting(inner: Any) -> Iterator[list[str]]:
    """The texts ``inner.encode`` is asked for (one at a time; a batch call never asks it)."""
    calls: list[str] = []

    def counted(text: str, **kwargs: Any) -> Any:
        calls.append(text)
        return type(inner).encode(inner, text, **kwargs)

    inner.encode = counted
    try:
        yield calls
    finally:
        del inner.encode


def subclassed(inner: Any, **attributes: Any) -> Any:
    """``inner``'s state in a subclass of its class with ``attributes``."""
    cls = type(inner)
    other = cls.__new__(type(f"Own{cls.__name__}", (cls,), attributes))
    other.__dict__.update(inner.__dict__)
    return other


def test_batched_ids_equal_one_at_a_time(tokenizer: Any) -> None:
    one_by_one = [list(tokenizer.encode(text)) for text in TEXTS]
    with counting(tokenizer._tokenizer) as calls:
        assert encode_inputs(tokenizer, TEXTS) == one_by_one
        assert calls == []
        assert encode_inputs(tokenizer, TEXTS[1:2]) == one_by_one[1:2]
        assert calls == TEXTS[1:2]  # a single text needs no batch


def test_a_tokenizer_without_the_wrapper_batches_too(tokenizer: Any) -> None:
    inner = tokenizer._tokenizer
    one_by_one = [list(tokenizer.encode(text)) for text in TEXTS]
    with counting(inner) as calls:
        assert encode_inputs(inner, TEXTS) == one_by_one
        assert calls == []


def test_token_ids_and_texts_keep_their_order(tokenizer: Any) -> None:
    inputs: list[str | list[int]] = ["alpha beta", [5, 6, 7], "gamma", [], [1]]
    got = encode_inputs(tokenizer, inputs)
    assert got == [list(tokenizer.encode("alpha beta")), [5, 6, 7], list(tokenizer.encode("gamma")), [], [1]]


def shouting_encode(self: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
    return type(self).__mro__[1].encode(self, text[::-1], *args, **kwargs)


def shouting_encode_plus(self: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
    """As CodeLlama's tokenizer does: one text is encoded otherwise than a list of them."""
    if isinstance(text, str):
        text = text[::-1]
    return type(self).__mro__[1]._encode_plus(self, text, *args, **kwargs)


@pytest.mark.parametrize(
    "attributes",
    [
        pytest.param({"encode": shouting_encode}, id="own-encode"),
        pytest.param({"_encode_plus": shouting_encode_plus}, id="own-encode-plus"),
        pytest.param({"is_fast": property(lambda self: False)}, id="slow"),
        pytest.param({"__call__": lambda self, *a, **k: pytest.fail("batched")}, id="own-call"),
    ],
)
def test_a_tokenizer_of_its_own_ways_is_asked_one_text_at_a_time(
    tokenizer: Any, attributes: dict[str, Any]
) -> None:
    inner = tokenizer._tokenizer
    tokenizer._tokenizer = own = subclassed(inner, **attributes)
    try:
        expected = [list(tokenizer.encode(text)) for text in TEXTS]
        with counting(own) as calls:
            got = encode_inputs(tokenizer, TEXTS)
    finally:
        tokenizer._tokenizer = inner
    assert got == expected
    assert calls == TEXTS  # each text on its own
    if "encode" in attributes or "_encode_plus" in attributes:  # the override took effect
        assert got != [list(inner.encode(text)) for text in TEXTS]


def test_a_wrapper_with_its_own_encode_keeps_it(tokenizer: Any) -> None:
    """A wrapper class of its own ``encode`` around a plain tokenizer is asked too."""

    class Wrapper:
        def __init__(self, inner: Any) -> None:
            self._tokenizer = inner

        def encode(self, text: str) -> list[int]:
            return [len(text)]

    assert encode_inputs(Wrapper(tokenizer._tokenizer), ["ab", "abc"]) == [[2], [3]]
