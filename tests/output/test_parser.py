"""The per-choice parser on its own: text in, typed events out, wherever chunks split."""

from __future__ import annotations

import itertools
import json
import time

import pytest
from mlx_lm.tool_parsers import json_tools

from mlxd.output.collect import Collector
from mlxd.output.events import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    TokenInfo,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from mlxd.output.parser import ChoiceParser, OutputSpec
from mlxd.output.reasoning import ReasoningFormat
from mlxd.output.tool_calls import ToolFormat

HERMES = ToolFormat(json_tools.tool_call_start, json_tools.tool_call_end, json_tools.parse_tool_call)
OPENED = ReasoningFormat("<think>", "</think>", starts_inside=True)
CLOSED = ReasoningFormat("<think>", "</think>", starts_inside=False)
SIZES = [1, 2, 3, 5, 7, 11, 1000]


def call(name: str, **arguments: object) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def run(
    text: str,
    size: int,
    spec: OutputSpec = OutputSpec(),  # noqa: B008 - frozen
    reasoning: ReasoningFormat | None = None,
    tools: ToolFormat | None = None,
    reason: str = "stop",
) -> tuple[list[Event], ChoiceParser]:
    """Feed ``text`` in pieces of ``size`` characters (stopping when the parser is done), then finish."""
    ids = (f"call_{i}" for i in itertools.count())
    parser = ChoiceParser(spec, reasoning=reasoning, tool_format=tools, new_id=lambda: next(ids))
    events: list[Event] = []
    fed = 0
    for i in range(0, len(text), size):
        events += parser.feed(text[i : i + size])
        fed += 1
        if parser.done:
            break
    events += parser.finish(reason, fed)  # type: ignore[arg-type]
    return events, parser


def merged(events: list[Event]) -> list[tuple[str, str]]:
    """Events as (kind, text), consecutive text or reasoning deltas joined: chunking must not show."""
    out: list[tuple[str, str]] = []
    for event in events:
        if isinstance(event, TextDelta | ReasoningDelta):
            kind = "text" if isinstance(event, TextDelta) else "reasoning"
            if out and out[-1][0] == kind:
                out[-1] = (kind, out[-1][1] + event.text)
            elif event.text:
                out.append((kind, event.text))
        elif isinstance(event, ToolCallStart):
            out.append(("call", f"{event.index}:{event.id}:{event.name}"))
        elif isinstance(event, ToolCallDelta):
            out.append(("arguments", f"{event.index}:{event.arguments}"))
        elif isinstance(event, ToolCallEnd):
            out.append(("end", str(event.index)))
        else:
            out.append(("finish", f"{event.reason}:{event.stop_sequence}"))
    return out


def test_no_format_at_all_is_one_text_event_per_piece() -> None:
    parser = ChoiceParser()
    assert parser.feed("Hello") == [TextDelta("Hello")]
    assert parser.feed("") == []
    assert parser.feed("<think></think><tool_call>") == [TextDelta("<think></think><tool_call>")]
    assert parser.finish("length", 3) == [Finish("length", 3)]


def test_tokens_ride_with_their_text() -> None:
    token = TokenInfo(7, "Hi", b"Hi", -0.5, [])
    assert ChoiceParser().feed("Hi", [token]) == [TextDelta("Hi", [token])]
    thinking = ChoiceParser(reasoning=OPENED)
    # A step whose text is all reasoning still reports its token's logprob.
    assert thinking.feed("hmm", [token]) == [ReasoningDelta("hmm"), TextDelta("", [token])]


@pytest.mark.parametrize("size", SIZES)
def test_think_tags_split_anywhere(size: int) -> None:
    text = "let me think </thin about it</think>\n\nThe answer is 4."
    events, _ = run(text, size, reasoning=OPENED)
    assert merged(events) == [
        ("reasoning", "let me think </thin about it"),
        ("text", "The answer is 4."),
        ("finish", "stop:None"),
    ]


@pytest.mark.parametrize("size", SIZES)
def test_a_block_the_model_opens_itself(size: int) -> None:
    events, _ = run("  <think>hmm</think>ok", size, reasoning=CLOSED)
    assert merged(events) == [("reasoning", "hmm"), ("text", "ok"), ("finish", "stop:None")]
    events, _ = run("no block <think> here", size, reasoning=CLOSED)
    assert merged(events) == [("text", "no block <think> here"), ("finish", "stop:None")]


@pytest.mark.parametrize("size", SIZES)
def test_tool_call_tags_split_anywhere(size: int) -> None:
    text = "Checking. " + call("get_weather", city="Paris") + " Done."
    events, parser = run(text, size, OutputSpec(tools=None), tools=HERMES)
    assert merged(events) == [
        ("text", "Checking. "),
        ("call", "0:call_0:get_weather"),
        ("arguments", '0:{"city": "Paris"}'),
        ("end", "0"),
        ("text", " Done."),
        ("finish", "tool_calls:None"),
    ]
    assert parser.calls == 1


@pytest.mark.parametrize("size", SIZES)
def test_several_calls_are_numbered(size: int) -> None:
    text = call("a", x=1) + "\n" + call("b", y=[1, 2])
    events, _ = run(text, size, tools=HERMES)
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.name) for s in starts] == [(0, "a"), (1, "b")]
    assert len({s.id for s in starts}) == 2
    arguments = [json.loads(e.arguments) for e in events if isinstance(e, ToolCallDelta)]
    assert arguments == [{"x": 1}, {"y": [1, 2]}]
    assert events[-1] == Finish("tool_calls", events[-1].completion_tokens)


@pytest.mark.parametrize("size", SIZES)
def test_one_call_at_most_ends_the_choice_after_it(size: int) -> None:
    text = "ok " + call("a", x=1) + " then " + call("b", y=2) + " and more text"
    events, parser = run(text, size, OutputSpec(max_tool_calls=1), tools=HERMES)
    assert merged(events) == [
        ("text", "ok "),
        ("call", "0:call_0:a"),
        ("arguments", '0:{"x": 1}'),
        ("end", "0"),
        ("finish", "tool_calls:None"),
    ]
    assert parser.done
    # It said so as soon as the call closed, so the rest of the text was never fed.
    pieces = -(-len(text) // size)
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.completion_tokens < pieces or pieces == 1


@pytest.mark.parametrize("size", SIZES)
def test_unparseable_calls_stay_content(size: int) -> None:
    broken = "<tool_call>\n{not json}\n</tool_call>"
    events, parser = run("a" + broken + "b", size, tools=HERMES)
    assert merged(events) == [("text", "a" + broken + "b"), ("finish", "stop:None")]
    assert parser.calls == 0


@pytest.mark.parametrize("size", SIZES)
def test_stop_strings_split_anywhere(size: int) -> None:
    events, parser = run("one two STOP three", size, OutputSpec(stops=("STOP", "never")))
    assert merged(events) == [("text", "one two "), ("finish", "stop:STOP")]
    assert parser.done


@pytest.mark.parametrize("size", SIZES)
def test_a_stop_inside_reasoning_ends_the_choice(size: int) -> None:
    events, _ = run("thinking END more</think>answer", size, OutputSpec(stops=("END",)), reasoning=OPENED)
    assert merged(events) == [("reasoning", "thinking "), ("finish", "stop:END")]


@pytest.mark.parametrize("size", SIZES)
def test_flush_releases_what_was_held_for_a_partial_tag(size: int) -> None:
    events, _ = run("answer <tool_", size, tools=HERMES, reason="length")
    assert merged(events) == [("text", "answer <tool_"), ("finish", "length:None")]
    events, _ = run("still thinking </th", size, reasoning=OPENED, reason="length")
    assert merged(events) == [("reasoning", "still thinking </th"), ("finish", "length:None")]
    events, _ = run("almost a ST", size, OutputSpec(stops=("STOP",)), reason="length")
    assert merged(events) == [("text", "almost a ST"), ("finish", "length:None")]
    events, _ = run('x<tool_call>\n{"name": "f", "argu', size, tools=HERMES, reason="length")
    assert merged(events) == [("text", 'x<tool_call>\n{"name": "f", "argu'), ("finish", "length:None")]


def test_length_with_calls_stays_length() -> None:
    events, _ = run(call("a") + " and then", 4, tools=HERMES, reason="length")
    assert isinstance(events[-1], Finish)
    assert events[-1].reason == "length"


def test_an_error_drops_what_was_held() -> None:
    parser = ChoiceParser(OutputSpec(stops=("STOP",)))
    assert parser.feed("abc ST") == [TextDelta("abc ")]
    assert parser.finish("error", 2, "boom") == [Finish("error", 2, "boom")]


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_everything_together_collects_into_one_choice(size: int) -> None:
    text = "plan</think>\n\nHere: " + call("get_weather", city="Oslo") + " bye STOP ignored"
    events, _ = run(text, size, OutputSpec(stops=("STOP",)), reasoning=OPENED, tools=HERMES)
    collector = Collector()
    collector.add(events)
    out = collector.result()
    assert out.reasoning == "plan"
    assert out.text == "Here:  bye "
    assert [(c.name, json.loads(c.arguments)) for c in out.calls] == [("get_weather", {"city": "Oslo"})]
    assert out.finish.reason == "tool_calls"
    assert out.finish.stop_sequence == "STOP"


@pytest.mark.parametrize(
    ("label", "spec", "reasoning", "tools"),
    [
        ("plain", OutputSpec(), None, None),
        ("stops", OutputSpec(stops=("<|end|>", "\n\nUser:")), None, None),
        ("reasoning+tools", OutputSpec(), OPENED, HERMES),
        ("everything", OutputSpec(stops=("<|end|>",)), OPENED, HERMES),
    ],
)
def test_cost_per_token(
    label: str, spec: OutputSpec, reasoning: ReasoningFormat | None, tools: ToolFormat | None
) -> None:
    """Prints µs per token (a measurement, not an assertion: timings belong to bench/)."""
    pieces = ["Hello", " world", ",", " this", " is", " a", " <", "b", ">", " test", "."] * 400
    if reasoning is not None:
        pieces = ["think", "ing", "</think>", "\n\n", *pieces]
    parser = ChoiceParser(spec, reasoning=reasoning, tool_format=tools)
    started = time.perf_counter()
    count = sum(len(parser.feed(piece)) for piece in pieces)
    elapsed = time.perf_counter() - started
    assert count >= len(pieces) - 4  # every piece became at least one event
    print(f"\nparser[{label}]: {elapsed / len(pieces) * 1e6:.2f} µs/token over {len(pieces)} tokens")
