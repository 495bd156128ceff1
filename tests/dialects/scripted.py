"""Scripted output events for the dialects' encoders (no engine, no server)."""

from __future__ import annotations

from mlxd.output.events import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)

#: Thinking, an answer, then one tool call whose arguments arrive in two pieces.
THINK_TEXT_CALL: list[list[Event]] = [
    [ReasoningDelta("let me "), ReasoningDelta("think")],
    [TextDelta("Sure. ")],
    [
        ToolCallStart(0, "call_abc", "get_weather"),
        ToolCallDelta(0, '{"city": '),
        ToolCallDelta(0, '"Paris"}'),
    ],
    [ToolCallEnd(0), Finish("tool_calls", 9)],
]
