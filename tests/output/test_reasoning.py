"""The reasoning splitter: thinking to reasoning_content, the rest to content."""

from __future__ import annotations

import pytest

from mlxd.output.reasoning import ReasoningFormat, ReasoningSplitter, split_reasoning

OPENED = ReasoningFormat("<think>", "</think>", starts_inside=True)
CLOSED = ReasoningFormat("<think>", "</think>", starts_inside=False)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_pieces_of_any_size_split_the_same(size: int) -> None:
    text = "let me think </thin about it</think>\n\nThe answer is 4."
    splitter = ReasoningSplitter(OPENED)
    reasoning = content = ""
    for i in range(0, len(text), size):
        r, c = splitter.feed(text[i : i + size])
        reasoning += r
        content += c
    r, c = splitter.flush()
    assert (reasoning + r, content + c) == ("let me think </thin about it", "The answer is 4.")


def test_a_block_the_model_opens_itself() -> None:
    assert split_reasoning(CLOSED, "  <think>hmm</think>ok") == ("hmm", "ok")


def test_no_block_means_all_content() -> None:
    assert split_reasoning(CLOSED, "just an answer <think> not at the start") == (
        "",
        "just an answer <think> not at the start",
    )


def test_unfinished_thinking_stays_reasoning() -> None:
    assert split_reasoning(OPENED, "still thinking </th") == ("still thinking </th", "")
