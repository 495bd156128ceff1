"""The grammars of structured answers, token by token with the reasoning model's own tokenizer.

A reasoning block the prompt opened comes first (bounded, closed only by the end tag's
token), then the answer: JSON content, tool calls, or either. llguidance's matcher says
which token sequences each grammar admits, so these pin what the real-model tests
(``tests/http/test_structured_reasoning.py``) can only sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlxd.runtime.grammars import ThinkingBlock, ToolCalls, structured_grammar
from mlxd.runtime.mlx.constrained import GrammarCache

pytestmark = pytest.mark.mlx

OK = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
CALL = {
    "type": "object",
    "properties": {"name": {"const": "ping"}, "arguments": {"type": "object", "additionalProperties": False}},
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
ANSWER = '{"ok": true}'
A_CALL = '<tool_call>\n{"name": "ping", "arguments": {}}\n</tool_call>'


@pytest.fixture(scope="module")
def tokenizer(thinking_model_dir: Path) -> Any:
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(thinking_model_dir)


@pytest.fixture(scope="module")
def cache() -> GrammarCache:
    return GrammarCache()


def thinking(tokenizer: Any, max_tokens: int = 50) -> ThinkingBlock:
    return ThinkingBlock(tokenizer.think_end, tuple(tokenizer.think_end_tokens), max_tokens)


def calls(**options: Any) -> ToolCalls:
    return ToolCalls("<tool_call>\n", "\n</tool_call>", CALL, **options)


class Matcher:
    """A fresh matcher of one grammar; ``admits`` says whether a sequence of texts and token
    ids is a complete output."""

    def __init__(self, tokenizer: Any, cache: GrammarCache, grammar: str) -> None:
        self.tokenizer = tokenizer
        self.matcher = cache.compiled(tokenizer, grammar).deep_copy()

    def ids(self, *parts: str | int) -> list[int]:
        out: list[int] = []
        for part in parts:
            out += [part] if isinstance(part, int) else self.tokenizer.encode(part, add_special_tokens=False)
        return out

    def takes(self, *parts: str | int) -> int:
        """How many of the parts' tokens the grammar accepts, in order."""
        return int(self.matcher.validate_tokens(self.ids(*parts)))

    def admits(self, *parts: str | int) -> bool:
        ids = self.ids(*parts)
        return (
            self.takes(*parts) == len(ids)
            and bool(self.matcher.consume_tokens(ids))
            and self.matcher.is_accepting()
        )


def test_the_answer_comes_after_the_thinking_and_its_end_token(tokenizer: Any, cache: GrammarCache) -> None:
    grammar = structured_grammar(OK, thinking=thinking(tokenizer))
    end = tokenizer.think_end_tokens[0]
    assert Matcher(tokenizer, cache, grammar).admits("Let me think. ", end, "\n\n", ANSWER)
    assert Matcher(tokenizer, cache, grammar).admits(end, ANSWER)  # no thinking at all
    # Without the end token the JSON is still thinking, and thinking cannot end the output.
    assert not Matcher(tokenizer, cache, grammar).admits(ANSWER)
    # After the end token only the answer may follow.
    wrong = Matcher(tokenizer, cache, grammar)
    assert wrong.takes("hm", end, "Sure!") == len(wrong.ids("hm", end))


def test_the_end_tag_cannot_be_spelled_out_inside_the_thinking(tokenizer: Any, cache: GrammarCache) -> None:
    matcher = Matcher(tokenizer, cache, structured_grammar(OK, thinking=thinking(tokenizer)))
    spelled = [t for piece in ("</", "think", ">") for t in matcher.ids(piece)]
    assert tokenizer.think_end_tokens[0] not in spelled
    assert matcher.takes(*spelled) < len(spelled)


def test_the_thinking_is_bounded_then_the_end_token_is_all_that_is_allowed(
    tokenizer: Any, cache: GrammarCache
) -> None:
    import numpy as np

    matcher = Matcher(tokenizer, cache, structured_grammar(OK, thinking=thinking(tokenizer, max_tokens=5)))
    word = matcher.ids(" the")
    assert len(word) == 1
    assert matcher.matcher.consume_tokens(word * 5)
    vocab = cache.lltokenizer(tokenizer).vocab_size
    mask = np.zeros((vocab + 31) // 32, dtype=np.int32)
    matcher.matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
    allowed = np.flatnonzero(np.unpackbits(mask.view(np.uint8), count=vocab, bitorder="little"))
    assert allowed.tolist() == list(tokenizer.think_end_tokens)


def test_a_format_with_tools_on_offer_admits_calls_or_content_and_nothing_else(
    tokenizer: Any, cache: GrammarCache
) -> None:
    grammar = structured_grammar(OK, calls=calls())
    assert Matcher(tokenizer, cache, grammar).admits(ANSWER)
    assert Matcher(tokenizer, cache, grammar).admits(A_CALL)
    assert Matcher(tokenizer, cache, grammar).admits(A_CALL, "\n", A_CALL)
    assert not Matcher(tokenizer, cache, grammar).admits("Hello")
    assert not Matcher(tokenizer, cache, grammar).admits(ANSWER, "\n", A_CALL)
    single = structured_grammar(OK, calls=calls(many=False))
    assert Matcher(tokenizer, cache, single).admits(A_CALL)
    assert not Matcher(tokenizer, cache, single).admits(A_CALL, "\n", A_CALL)


def test_a_forced_call_admits_exactly_one_call(tokenizer: Any, cache: GrammarCache) -> None:
    grammar = structured_grammar(OK, calls=calls(forced=True), thinking=thinking(tokenizer))
    end = tokenizer.think_end_tokens[0]
    assert Matcher(tokenizer, cache, grammar).admits("plan", end, "\n", A_CALL)
    assert not Matcher(tokenizer, cache, grammar).admits("plan", end, ANSWER)
    assert not Matcher(tokenizer, cache, grammar).admits("plan", end, A_CALL, "\n", A_CALL)


def test_a_bad_schema_is_still_named_with_a_thinking_block(tokenizer: Any) -> None:
    from mlxd.runtime.grammars import GrammarError

    with pytest.raises(GrammarError) as bad:
        structured_grammar({"type": "object", "not": {}}, thinking=thinking(tokenizer))
    assert bad.value.param == "response_format"
    assert "not" in bad.value.message
    with pytest.raises(GrammarError) as bad_call:
        structured_grammar(OK, calls=ToolCalls("<a>", "</a>", {"not": {}}))
    assert "tool parameters schema" in bad_call.value.message
