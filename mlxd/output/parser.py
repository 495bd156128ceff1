"""The per-choice parser: decoded text in, typed events out.

Fed the text of each decode step (and its tokens), it cuts, in this order, stop
strings (on the raw text, so a stop string ends the choice even inside a thinking
block), the reasoning block, and tool calls; what remains is answer text. ``finish``
flushes whatever was held back for a partial tag and closes the choice.

It is cheap per token: with no stop strings, reasoning or tools it wraps the text in
one event and returns; otherwise each cutter only scans the new text (plus the few
characters it held back). It holds no HTTP or MLX types, so it can run on the
HTTP side or on the MLX worker thread alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlxd.output.events import (
    Event,
    Finish,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    TokenInfo,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from mlxd.output.reasoning import ReasoningFormat, ReasoningSplitter
from mlxd.output.stops import StopMatcher
from mlxd.output.tool_calls import ParsedCall, ToolCallSplitter, ToolFormat


def new_call_id() -> str:
    """An OpenAI-style call id: ``call_`` and 24 hex characters."""
    return "call_" + os.urandom(12).hex()


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """What a request asks of its output, besides the model's own formats."""

    #: Strings that end the choice where they appear (not included in the output).
    stops: tuple[str, ...] = ()
    #: The request's tool definitions, handed to the model's tool-call parser.
    tools: Any = None
    #: At most this many tool calls (``parallel_tool_calls: false`` is 1): the choice
    #: ends as soon as the last allowed call closes.
    max_tool_calls: int | None = None


class ChoiceParser:
    """Turns one choice's generated text into events.

    Call ``feed`` for each piece of text as it is decoded and ``finish`` once when the
    engine ends the choice. When ``done`` turns true after a ``feed`` (a stop string
    matched, or the last allowed tool call closed), the choice needs no more tokens:
    stop generating and call ``finish``.
    """

    __slots__ = ("_calls", "_ended", "_fast", "_max_calls", "_new_id", "_stops", "_thinking", "calls", "done")

    def __init__(
        self,
        spec: OutputSpec = OutputSpec(),
        *,
        reasoning: ReasoningFormat | None = None,
        tool_format: ToolFormat | None = None,
        new_id: Callable[[], str] = new_call_id,
    ) -> None:
        self._stops = StopMatcher(spec.stops) if spec.stops else None
        self._thinking = ReasoningSplitter(reasoning) if reasoning is not None else None
        self._calls = ToolCallSplitter(tool_format, spec.tools) if tool_format is not None else None
        self._max_calls = spec.max_tool_calls
        self._new_id = new_id
        self._fast = self._stops is None and self._thinking is None and self._calls is None
        #: Tool calls emitted so far.
        self.calls = 0
        #: The choice needs no more text (a stop string matched or the call limit was reached).
        self.done = False
        self._ended: FinishReason | None = None

    def feed(self, text: str, tokens: list[TokenInfo] | None = None) -> list[Event]:
        """The events this piece of text completes (text held for a partial tag comes later)."""
        if self._fast:
            return [TextDelta(text, tokens)] if text or tokens else []
        if self.done:
            return []
        events: list[Event] = []
        stopped = False
        if self._stops is not None:
            text, stopped = self._stops.feed(text)
        self._route(text, tokens, events)
        if stopped:
            self.done = True
            self._ended = "stop"
        return events

    def finish(self, reason: FinishReason, completion_tokens: int, error: str | None = None) -> list[Event]:
        """Flush what was held back and close the choice with its ``Finish`` event.

        ``reason`` is the engine's; a choice the parser ended itself keeps its own reason,
        and ``stop`` becomes ``tool_calls`` when the model called tools.
        """
        events: list[Event] = []
        if reason == "error":
            self._ended = None  # whatever was held back, the choice failed
        elif not self._fast and self._ended != "tool_calls":
            # Text held for a partial tag or stop string was text after all. (After the
            # last allowed tool call nothing counts, so nothing is flushed then.)
            held = self._stops.flush() if self._stops is not None and not self.done else ""
            self._route(held, None, events, final=True)
        if self._ended is not None:
            reason = self._ended
        if reason == "stop" and self.calls:
            reason = "tool_calls"
        matched = self._stops.matched if self._stops is not None else None
        events.append(Finish(reason, completion_tokens, error, matched))
        self.done = True
        return events

    def _route(
        self, text: str, tokens: list[TokenInfo] | None, events: list[Event], final: bool = False
    ) -> None:
        """Send text through the reasoning and tool-call cutters, in that order."""
        if self._thinking is not None:
            reasoning, text = self._thinking.feed(text)
            if final:
                more_reasoning, more_text = self._thinking.flush()
                reasoning, text = reasoning + more_reasoning, text + more_text
            if reasoning:
                events.append(ReasoningDelta(reasoning))
        if self._calls is None:
            if text or tokens:
                events.append(TextDelta(text, tokens))
            return
        pieces = self._calls.feed(text) if text else []
        if final:
            rest = self._calls.flush()
            if rest:
                pieces.append(rest)
        if tokens and not (pieces and isinstance(pieces[0], str)):
            events.append(TextDelta("", tokens))  # the step's logprobs, even when it wrote no text
            tokens = None
        for piece in pieces:
            if isinstance(piece, str):
                events.append(TextDelta(piece, tokens))
                tokens = None
            else:
                self._emit_calls(piece, events)
                if self._ended == "tool_calls":
                    return  # the last allowed call: what follows it is dropped

    def _emit_calls(self, calls: list[ParsedCall], events: list[Event]) -> None:
        for call in calls:
            if self._max_calls is not None and self.calls >= self._max_calls:
                break
            index = self.calls
            self.calls += 1
            events.append(ToolCallStart(index, self._new_id(), call.name))
            events.append(ToolCallDelta(index, call.arguments))
            events.append(ToolCallEnd(index))
        if self._max_calls is not None and self.calls >= self._max_calls:
            # parallel_tool_calls: false: the answer is this call; nothing after it counts.
            self.done = True
            self._ended = "tool_calls"
