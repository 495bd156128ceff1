"""Deterministic prompts: every target gets the same messages for the same request."""

from __future__ import annotations

import random

Message = dict[str, str]

_TEXT = (
    "the daemon reads one settings file and opens a port on the loopback address then waits "
    "for requests a model answers with tokens one at a time and each token goes to its "
    "client as soon as it is ready two people asking at once share one batch the engine "
    "runs a single step for all of them and hands every token to the right stream on monday "
    "the weather was cold and wet on tuesday the sun came out at seven and the market sold "
    "apples for three dollars a small step costs little but every copy is paid again"
)
_WORDS = _TEXT.split()


def request_messages(index: int) -> list[Message]:
    """A short, unique chat request (the number up front defeats prefix caches)."""
    return [{"role": "user", "content": f"Request {index}: tell me a long story about the small daemon."}]


def filler_text(words: int, seed: int) -> str:
    """``words`` plain English words, the same for the same seed."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def turn_message(conversation: int, turn: int, words: int) -> Message:
    """One user turn of a multi-turn chat: long enough to grow the history quickly."""
    text = f"Conversation {conversation}, turn {turn}. {filler_text(words, conversation * 100 + turn)}"
    return {"role": "user", "content": text}
