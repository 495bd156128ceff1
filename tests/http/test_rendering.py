"""SSE framing and response bodies of the OpenAI encoders, from scripted engine streams
(no engine, no server): the role chunk, content, finish, usage and ``[DONE]``, echo, and
the three logprob shapes."""

from __future__ import annotations

import asyncio

from mlxd.http.dialects.openai.chat import ChatEncoder
from mlxd.http.dialects.openai.completions import CompletionEncoder
from mlxd.http.dialects.openai.logprobs import LogprobsRenderer
from mlxd.http.dialects.openai.stream import sse
from mlxd.http.generation import Generation
from mlxd.http.pipeline import ChoiceRun, collect
from mlxd.output.events import Finish, TextDelta, TokenInfo
from mlxd.runtime.engine import GenerationEvent
from tests.http.test_pipeline import ScriptedStream, drain, frames


def test_a_chat_stream_is_role_content_finish_usage_done() -> None:
    stream = ScriptedStream(["Hel", "lo", "!"], finish="length")
    body = asyncio.run(drain(sse(Generation("m", [ChoiceRun(0, stream)]), ChatEncoder("tiny", None), True)))
    out = frames(body)
    assert out[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [f["choices"][0]["delta"].get("content") for f in out[1:-2] if f["choices"]]
    assert "".join(c for c in contents if c) == "Hello!"
    finishes = [f["choices"][0]["finish_reason"] for f in out[1:-1] if f["choices"]]
    assert finishes[-1] == "length"
    assert finishes.count("length") == 1
    assert out[-2]["choices"] == []
    assert out[-2]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    assert out[-1] == "[DONE]"
    assert len({f["id"] for f in out[:-1]}) == 1
    assert stream.cancelled  # the stream is always released


def test_text_completion_frames_carry_text_and_echo() -> None:
    stream = ScriptedStream(["x", "y"])
    encoder = CompletionEncoder("tiny", None, echo="say: ")
    out = frames(asyncio.run(drain(sse(Generation("m", [ChoiceRun(0, stream)]), encoder, False))))
    assert out[0]["object"] == "text_completion"
    assert out[0]["choices"][0]["text"] == "say: "
    assert "".join(f["choices"][0]["text"] for f in out[1:-1]) == "xy"
    assert out[-2]["choices"][0]["finish_reason"] == "stop"
    assert out[-1] == "[DONE]"


def test_collect_gathers_text_tokens_and_the_finish() -> None:
    info = TokenInfo(7, "x", b"x", -0.1, [])
    stream = ScriptedStream(["x", "y"])
    stream.batches = [
        [
            GenerationEvent([TextDelta("x", [info])], 1),
            GenerationEvent([TextDelta("y", [info]), Finish("stop", 2)], 2),
        ]
    ]
    result = asyncio.run(collect(ChoiceRun(0, stream)))
    assert (result.text, result.finish.reason, result.finish.completion_tokens) == ("xy", "stop", 2)
    assert len(result.tokens) == 2
    failed = ScriptedStream([""], finish="error", error="no room")
    out = asyncio.run(collect(ChoiceRun(0, failed)))
    assert (out.finish.reason, out.finish.error) == ("error", "no room")


def test_logprob_shapes() -> None:
    token = TokenInfo(7, "hi", b"hi", -0.25, [(7, "hi", b"hi", -0.25), (9, "yo", b"yo", -2.0)])
    openai = LogprobsRenderer("openai").render([token])
    seed = LogprobsRenderer("seed").render([token])
    legacy = LogprobsRenderer("legacy")
    first, second = legacy.render([token]), legacy.render([token])
    assert openai is not None
    assert openai.content[0].top_logprobs[1].token == "yo"  # type: ignore[union-attr]
    assert seed is not None
    assert seed.tokens == [7]  # type: ignore[union-attr]
    assert first.text_offset == [0]  # type: ignore[union-attr]
    assert second.text_offset == [2]  # type: ignore[union-attr]
    assert LogprobsRenderer(None).render([token]) is None
