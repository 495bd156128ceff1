"""A sequence's output on the worker: its parser ends it at the token that completed a stop
string or its last allowed tool call, and held output goes out as one delivery.

Fed with scripted text (a detokenizer that maps token ``i`` to the ``i``-th piece), so the
cases random weights never produce are pinned; no MLX is needed for any of it.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from mlx_lm.tool_parsers import json_tools

from mlxd.output.events import Finish, ReasoningDelta, TextDelta, ToolCallStart
from mlxd.output.parser import ChoiceParser, OutputSpec
from mlxd.output.reasoning import ReasoningFormat
from mlxd.output.tool_calls import ToolFormat
from mlxd.runtime.engine import GenerationEvent
from mlxd.runtime.mlx.sequence import Sequence
from tests.http.test_pipeline import TextDetokenizer

HERMES = ToolFormat(json_tools.tool_call_start, json_tools.tool_call_end, json_tools.parse_tool_call)


def sequence(
    texts: list[str],
    spec: OutputSpec | None = None,
    *,
    interval: float | None = 0.0,
    tools: ToolFormat | None = None,
    reasoning: ReasoningFormat | None = None,
) -> Sequence:
    return Sequence(
        seq_id=1,
        uid=-1,
        sink=None,  # type: ignore[arg-type]
        detokenizer=TextDetokenizer(texts),
        parser=ChoiceParser(spec or OutputSpec(), reasoning=reasoning, tool_format=tools),
        eos=frozenset(),
        logprobs=None,
        pieces=None,  # type: ignore[arg-type]
        interval=interval,
    )


def feed(seq: Sequence, count: int, *, now: float = 0.0, last: str | None = None) -> list[GenerationEvent]:
    """Tokens 0..count-1 (the last with finish reason ``last``), until the sequence ends."""
    out = []
    for token in range(count):
        reason = last if token == count - 1 else None
        delivery = seq.output(SimpleNamespace(token=token, logprobs=None, finish_reason=reason), now)
        if delivery is not None:
            out.append(delivery)
            if delivery.finish is not None:
                break
    return out


def text(deliveries: list[GenerationEvent]) -> str:
    return "".join(e.text for d in deliveries for e in d.events if isinstance(e, TextDelta))


def test_a_stop_string_across_tokens_ends_the_sequence_at_the_token_that_completed_it() -> None:
    pieces = ["Hello ", "wor", "ld!", " never", " seen"]
    seq = sequence(pieces, OutputSpec(stops=("world",)))
    deliveries = feed(seq, len(pieces), last="length")
    assert text(deliveries) == "Hello "
    finish = deliveries[-1].finish
    assert finish is not None
    assert (finish.reason, finish.completion_tokens, finish.stop_sequence) == ("stop", 3, "world")
    assert seq.generated == 3  # the worker feeds nothing more once it ended


def test_the_last_allowed_tool_call_ends_the_sequence() -> None:
    call = "<tool_call>\n" + json.dumps({"name": "a", "arguments": {"x": 1}}) + "\n</tool_call>"
    pieces = ["Sure. ", call, " and more", " text"]
    seq = sequence(pieces, OutputSpec(max_tool_calls=1), tools=HERMES)
    deliveries = feed(seq, len(pieces), last="length")
    events = [e for d in deliveries for e in d.events]
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [s.name for s in starts] == ["a"]
    assert deliveries[-1].finish == Finish("tool_calls", 2)
    assert seq.generated == 2


def test_reasoning_and_answer_come_out_typed_in_order() -> None:
    think = ReasoningFormat("<think>", "</think>", starts_inside=True)
    seq = sequence(["plan", "</th", "ink>\n\nok"], reasoning=think)
    events = [e for d in feed(seq, 3, last="stop") for e in d.events]
    assert events == [ReasoningDelta("plan"), TextDelta("ok"), Finish("stop", 3)]


def test_held_output_goes_out_as_one_delivery_and_the_end_is_never_held() -> None:
    seq = sequence(["a", "b", "c", "d"], interval=10.0)
    first = seq.output(SimpleNamespace(token=0, logprobs=None, finish_reason=None), 100.0)
    assert first is not None  # the first output is never held
    assert seq.output(SimpleNamespace(token=1, logprobs=None, finish_reason=None), 101.0) is None
    assert seq.output(SimpleNamespace(token=2, logprobs=None, finish_reason=None), 102.0) is None
    last = seq.output(SimpleNamespace(token=3, logprobs=None, finish_reason="length"), 103.0)
    assert last is not None
    assert [e for e in last.events if isinstance(e, TextDelta)] == [
        TextDelta("b"),
        TextDelta("c"),
        TextDelta("d"),
    ]
    assert last.finish == Finish("length", 4)
    assert last.completion_tokens == 4


def test_a_failure_inside_the_sequence_ends_it_with_an_error() -> None:
    seq = sequence(["a"])
    delivery = seq.output(SimpleNamespace(token=5, logprobs=None, finish_reason=None), 0.0)  # no such piece
    assert delivery is not None
    finish = delivery.finish
    assert finish is not None
    assert finish.reason == "error"
    assert finish.error is not None
    assert finish.error.startswith("generation failed")
