"""The output pipeline end to end without MLX: scripted text through the worker's own
``Sequence`` (its output parser, its ending on a stop string or a tool-call limit), then the
HTTP side's runs and encoders (no server).

Random weights never write two tool calls or fail mid-stream on cue; scripted text does,
so the handling of those cases is pinned here. The real-model tests cover the same paths
end to end where a tiny model can produce them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from mlx_lm.tool_parsers import json_tools

from mlxd.http.dialects.openai.chat import ChatEncoder
from mlxd.http.dialects.openai.completions import CompletionEncoder
from mlxd.http.dialects.openai.stream import sse
from mlxd.http.generation import Generation
from mlxd.http.pipeline import ChoiceRun, collect, usage
from mlxd.output.parser import ChoiceParser, OutputSpec
from mlxd.output.reasoning import ReasoningFormat
from mlxd.output.tool_calls import ToolFormat
from mlxd.runtime.engine import GenerationEvent
from mlxd.runtime.mlx.sequence import Sequence

HERMES = ToolFormat(json_tools.tool_call_start, json_tools.tool_call_end, json_tools.parse_tool_call)


def call(name: str, **arguments: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


class TextDetokenizer:
    """Token ``i`` decodes to the ``i``-th scripted piece of text."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self._pending = ""

    def add_token(self, token: int) -> None:
        self._pending += self.texts[token]

    def finalize(self) -> None:
        pass

    @property
    def last_segment(self) -> str:
        segment, self._pending = self._pending, ""
        return segment


class ScriptedStream:
    """A ``GenerationStream`` whose deliveries come from the worker's ``Sequence``, fed one
    token per scripted piece of text (it stops feeding once the sequence has ended)."""

    def __init__(
        self,
        texts: list[str],
        finish: str = "stop",
        error: str | None = None,
        tool_format: ToolFormat | None = None,
        reasoning_format: ReasoningFormat | None = None,
        spec: OutputSpec | None = None,
    ) -> None:
        self.sequence = Sequence(
            seq_id=1,
            uid=-1,
            sink=self,  # type: ignore[arg-type]
            detokenizer=TextDetokenizer(texts),
            parser=ChoiceParser(spec or OutputSpec(), reasoning=reasoning_format, tool_format=tool_format),
            eos=frozenset(),
            logprobs=None,
            pieces=None,  # type: ignore[arg-type]
        )
        self.batches: list[list[GenerationEvent]] = []
        for token in range(len(texts)):
            last = token == len(texts) - 1
            reason = finish if last and finish != "error" else None
            response = SimpleNamespace(token=token, logprobs=None, finish_reason=reason)
            delivery = self.sequence.output(response, 0.0)
            if delivery is not None:
                self.batches.append([delivery])
                if delivery.finish is not None:
                    break
            if last and finish == "error":  # the worker failed after this piece
                self.batches.append([GenerationEvent.failure(error or "failed", token + 1)])
        self.prompt_tokens = 10
        self.cached_tokens = 4
        self.delivered = 0
        self.cancelled = False

    async def __aiter__(self) -> AsyncIterator[list[GenerationEvent]]:
        for batch in self.batches:
            if self.cancelled:
                return
            self.delivered += 1
            await asyncio.sleep(0)
            yield batch

    def cancel(self) -> None:
        self.cancelled = True


def frames(body: bytes) -> list[Any]:
    return [
        event[len("data: ") :] if event.endswith("[DONE]") else json.loads(event[len("data: ") :])
        for event in body.decode().split("\n\n")
        if event
    ]


async def drain(iterator: AsyncIterator[bytes]) -> bytes:
    return b"".join([part async for part in iterator])


def test_one_call_at_most_stops_the_stream_after_it() -> None:
    texts = ["Sure. ", call("a", x=1), " and ", call("b", y=2), " more", " text"]
    stream = ScriptedStream(texts, tool_format=HERMES, spec=OutputSpec(max_tool_calls=1))
    run = ChoiceRun(0, stream)
    out = asyncio.run(collect(run))
    assert [(c.name, json.loads(c.arguments)) for c in out.calls] == [("a", {"x": 1})]
    assert out.text == "Sure. "
    assert out.finish.reason == "tool_calls"
    assert stream.cancelled
    # The worker's sequence ended at the first call: nothing more was generated.
    assert stream.sequence.generated == 2
    assert out.finish.completion_tokens == 2
    body = ChatEncoder("m", None).response([out], usage([run]))
    assert body.choices[0].message.tool_calls is not None
    assert len(body.choices[0].message.tool_calls) == 1
    assert body.choices[0].message.content == "Sure. "


def test_a_failure_mid_stream_is_one_error_event_in_the_envelope() -> None:
    stream = ScriptedStream(["Hello", " wor"], finish="error", error="the worker died")
    body = asyncio.run(drain(sse(Generation("m", [ChoiceRun(0, stream)]), ChatEncoder("m", None), True)))
    events = frames(body)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["choices"][0]["delta"] == {"content": "Hello"}
    assert events[2]["choices"][0]["delta"] == {"content": " wor"}
    assert events[-2] == {
        "error": {
            "message": "the worker died",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert events[-1] == "[DONE]"
    assert len(events) == 5


def test_reasoning_text_and_calls_stream_in_the_order_written() -> None:
    think = ReasoningFormat("<think>", "</think>", starts_inside=True)
    stream = ScriptedStream(
        ["plan</think>\n\nok " + call("a", x=1)], tool_format=HERMES, reasoning_format=think
    )
    body = asyncio.run(drain(sse(Generation("m", [ChoiceRun(0, stream)]), ChatEncoder("m", None), False)))
    deltas = [e["choices"][0]["delta"] for e in frames(body)[:-1]]
    assert deltas[1] == {"reasoning_content": "plan"}
    assert deltas[2] == {"content": "ok "}
    (entry,) = deltas[3]["tool_calls"]
    assert (entry["index"], entry["type"], entry["function"]["name"]) == (0, "function", "a")
    assert json.loads(entry["function"]["arguments"]) == {"x": 1}
    assert deltas[4] == {}
    assert frames(body)[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_n_choices_interleave_then_usage_then_done() -> None:
    streams = [ScriptedStream(["a", "b", "c"]), ScriptedStream(["x", "y"], finish="length")]
    runs = [ChoiceRun(i, s) for i, s in enumerate(streams)]
    events = frames(asyncio.run(drain(sse(Generation("m", runs), CompletionEncoder("m", None), True))))
    assert events[-1] == "[DONE]"
    assert events[-2]["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 4},
    }
    texts: dict[int, str] = {0: "", 1: ""}
    finishes: dict[int, str] = {}
    for event in events[:-2]:
        assert "usage" not in event
        (choice,) = event["choices"]
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"]:
            finishes[choice["index"]] = choice["finish_reason"]
    assert texts == {0: "abc", 1: "xy"}
    assert finishes == {0: "stop", 1: "length"}
