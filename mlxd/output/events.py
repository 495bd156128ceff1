"""The typed events a choice's output becomes, shared by every dialect's encoder.

Events are small slotted classes: the parser makes at least one per decode step,
so they must cost next to nothing to build and to match on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Why a choice ended. ``tool_calls`` replaces ``stop`` when the model called tools;
#: ``cancelled`` and ``error`` never reach a client as a finish reason.
FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


@dataclass(slots=True)
class TokenInfo:
    """A generated token with its logprob and the top alternatives (when asked for)."""

    id: int
    text: str
    raw: bytes
    logprob: float
    #: ``(id, text, raw bytes, logprob)`` of the most likely tokens, most likely first.
    top: list[tuple[int, str, bytes, float]]


@dataclass(slots=True)
class TextDelta:
    """Answer text, with the tokens behind it when logprobs were asked for.

    ``text`` may be empty when the step's tokens went to reasoning or a tool call:
    their logprobs still belong to the choice.
    """

    text: str
    tokens: list[TokenInfo] | None = None


@dataclass(slots=True)
class ReasoningDelta:
    """Thinking text of a reasoning model (between its think tags)."""

    text: str


@dataclass(slots=True)
class ToolCallStart:
    """A tool call begins: its position among the choice's calls, its id and the tool's name."""

    index: int
    id: str
    name: str


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a tool call's arguments (JSON text; the pieces concatenate)."""

    index: int
    arguments: str


@dataclass(slots=True)
class ToolCallEnd:
    """A tool call is complete."""

    index: int


@dataclass(slots=True)
class Finish:
    """The choice ended; always its last event."""

    reason: FinishReason
    completion_tokens: int
    error: str | None = None
    #: The stop string that ended the choice, when the parser cut it.
    stop_sequence: str | None = None
    #: With ``error``: the error's code (``unavailable`` when the daemon stopped the choice).
    code: str | None = None


@dataclass(slots=True)
class Usage:
    """Token counts of a whole request (all choices), sent once after the last finish."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Event = TextDelta | ReasoningDelta | ToolCallStart | ToolCallDelta | ToolCallEnd | Finish
