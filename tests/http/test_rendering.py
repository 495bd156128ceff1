"""SSE framing and response bodies from scripted generation events (no engine, no server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from mlxd.http.rendering import Renderer, collect, sse, sse_choices
from mlxd.runtime.engine import GenerationEvent, TokenInfo


class Scripted:
    """A ``GenerationStream`` that yields prepared batches of events."""

    def __init__(self, *batches: list[GenerationEvent], prompt_tokens: int = 5) -> None:
        self.batches = list(batches)
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = 2
        self.tool_format = None
        self.reasoning_format = None
        self.cancelled = False

    async def __aiter__(self) -> AsyncIterator[list[GenerationEvent]]:
        for batch in self.batches:
            await asyncio.sleep(0)
            yield batch

    def cancel(self) -> None:
        self.cancelled = True


def ev(text: str, count: int, finish: Any = None, error: str | None = None) -> GenerationEvent:
    return GenerationEvent(text=text, finish_reason=finish, completion_tokens=count, error=error)


def frames(body: AsyncIterator[bytes]) -> list[Any]:
    async def read() -> bytes:
        return b"".join([chunk async for chunk in body])

    raw = asyncio.run(read()).decode()
    assert raw.endswith("\n\n")
    out: list[Any] = []
    for frame in raw.split("\n\n")[:-1]:
        assert frame.startswith("data: ")
        payload = frame.removeprefix("data: ")
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def test_a_chat_stream_is_role_content_finish_usage_done() -> None:
    stream = Scripted([ev("Hel", 1)], [ev("lo", 2), ev("!", 3, "length")])
    out = frames(sse(stream, Renderer(chat=True, model="tiny", logprobs=None), include_usage=True))
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [f["choices"][0]["delta"].get("content") for f in out[1:-2] if f["choices"]]
    assert "".join(c for c in contents if c) == "Hello!"
    finishes = [f["choices"][0]["finish_reason"] for f in out[1:-1] if f["choices"]]
    assert finishes[-1] == "length"
    assert finishes.count("length") == 1
    assert out[-2]["choices"] == []
    assert out[-2]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    assert out[-1] == "[DONE]"
    assert len({f["id"] for f in out[:-1]}) == 1
    assert stream.cancelled  # the stream is always released


def test_an_error_after_the_start_is_one_error_event_then_the_end() -> None:
    stream = Scripted([ev("a", 1)], [ev("", 1, "error", "generation failed: boom")])
    out = frames(sse(stream, Renderer(chat=True, model="tiny", logprobs=None), include_usage=True))
    assert out[-1] == {
        "error": {
            "message": "generation failed: boom",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert "[DONE]" not in out


def test_text_completion_frames_carry_text_and_echo() -> None:
    stream = Scripted([ev("x", 1), ev("y", 2, "stop")])
    out = frames(
        sse(stream, Renderer(chat=False, model="tiny", logprobs=None, echo="say: "), include_usage=False)
    )
    assert out[0]["object"] == "text_completion"
    assert out[0]["choices"][0]["text"] == "say: "
    assert "".join(f["choices"][0]["text"] for f in out[1:-1]) == "xy"
    assert out[-2]["choices"][0]["finish_reason"] == "stop"
    assert out[-1] == "[DONE]"


def test_n_choices_interleave_with_their_indices_and_one_usage() -> None:
    streams = [Scripted([ev("a", 1)], [ev("b", 2, "length")]), Scripted([ev("c", 1, "stop")])]
    out = frames(sse_choices(streams, Renderer(chat=True, model="tiny", logprobs=None), include_usage=True))
    roles = [
        f["choices"][0]["index"]
        for f in out
        if f != "[DONE]" and f["choices"] and "role" in f["choices"][0]["delta"]
    ]
    assert roles == [0, 1]
    text = {0: "", 1: ""}
    for frame in out[:-2]:
        for choice in frame["choices"]:
            text[choice["index"]] += choice["delta"].get("content") or ""
    assert text == {0: "ab", 1: "c"}
    assert out[-2]["usage"]["completion_tokens"] == 3  # both choices, the prompt once
    assert out[-2]["usage"]["prompt_tokens"] == 5


def test_collect_gathers_text_tokens_and_the_finish() -> None:
    info = TokenInfo(7, "x", b"x", -0.1, [])
    events = [GenerationEvent("x", [info], None, 1), GenerationEvent("y", [info], "stop", 2)]
    result = asyncio.run(collect(Scripted(events), want_tokens=True))
    assert (result.text, result.finish_reason, result.completion_tokens) == ("xy", "stop", 2)
    assert len(result.tokens) == 2
    failed = asyncio.run(collect(Scripted([ev("", 0, "error", "no room")]), want_tokens=False))
    assert (failed.finish_reason, failed.error) == ("error", "no room")


def test_logprob_shapes() -> None:
    token = TokenInfo(7, "hi", b"hi", -0.25, [(7, "hi", b"hi", -0.25), (9, "yo", b"yo", -2.0)])
    openai = Renderer(chat=True, model="m", logprobs="openai").render_logprobs([token])
    seed = Renderer(chat=True, model="m", logprobs="seed").render_logprobs([token])
    legacy = Renderer(chat=False, model="m", logprobs="legacy")
    first, second = legacy.render_logprobs([token]), legacy.render_logprobs([token])
    assert openai is not None
    assert openai.content[0].top_logprobs[1].token == "yo"
    assert seed is not None
    assert seed.tokens == [7]
    assert first.text_offset == [0]
    assert second.text_offset == [2]
