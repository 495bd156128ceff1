"""A whole choice, gathered from its events: what non-streaming responses are built from."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from mlxd.output.events import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    TokenInfo,
    ToolCallDelta,
    ToolCallStart,
)


@dataclass(slots=True)
class CallOutput:
    """One complete tool call."""

    id: str
    name: str
    arguments: str = ""


@dataclass(slots=True)
class ChoiceOutput:
    """Everything one choice produced, in the pieces every dialect reports."""

    text: str = ""
    reasoning: str = ""
    calls: list[CallOutput] = field(default_factory=list)
    tokens: list[TokenInfo] = field(default_factory=list)
    finish: Finish = field(default_factory=lambda: Finish("error", 0, "no output"))


class Collector:
    """Folds a choice's events into a ``ChoiceOutput``."""

    __slots__ = ("_reasoning", "_text", "output")

    def __init__(self) -> None:
        self.output = ChoiceOutput()
        self._text: list[str] = []
        self._reasoning: list[str] = []

    def add(self, events: Iterable[Event]) -> None:
        """Take in the next events of the choice."""
        out = self.output
        for event in events:
            if isinstance(event, TextDelta):
                self._text.append(event.text)
                if event.tokens:
                    out.tokens.extend(event.tokens)
            elif isinstance(event, ReasoningDelta):
                self._reasoning.append(event.text)
            elif isinstance(event, ToolCallStart):
                out.calls.append(CallOutput(event.id, event.name))
            elif isinstance(event, ToolCallDelta):
                out.calls[event.index].arguments += event.arguments
            elif isinstance(event, Finish):
                out.finish = event

    def result(self) -> ChoiceOutput:
        """The gathered choice."""
        self.output.text = "".join(self._text)
        self.output.reasoning = "".join(self._reasoning)
        return self.output
