"""Chat Completions out: output events to ``chat.completion`` bodies and ``chat.completion.chunk`` frames."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from mlxd import __version__
from mlxd.http.dialects.openai.logprobs import LogprobShape, LogprobsRenderer
from mlxd.http.ids import new_id
from mlxd.output.collect import ChoiceOutput
from mlxd.output.events import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    TokenInfo,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from mlxd.protocol.responses import (
    AnyLogprobs,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    PromptTokensDetails,
)
from mlxd.protocol.responses import Usage as WireUsage

FINGERPRINT = f"mlxd-{__version__}"
_encode = msgspec.json.Encoder().encode


def wire_usage(usage: Usage) -> WireUsage:
    """The ``usage`` object of both OpenAI endpoints."""
    return WireUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(usage.cached_tokens),
    )


def sse_frame(body: Any) -> bytes:
    """One ``data:`` event."""
    return b"data: " + _encode(body) + b"\n\n"


class ChatEncoder:
    """One chat request's responses: the whole body, or its stream's frames."""

    __slots__ = ("created", "id", "logprobs", "model")

    def __init__(self, model: str, logprobs: LogprobShape | None) -> None:
        self.model = model
        self.logprobs = LogprobsRenderer(logprobs)
        self.id = "chatcmpl-" + new_id()
        self.created = int(time.time())

    # --- a whole response ------------------------------------------------------------

    def response(self, outputs: Sequence[ChoiceOutput], usage: Usage) -> ChatCompletion:
        """The non-streaming body, one choice per output."""
        return ChatCompletion(
            self.id,
            self.created,
            self.model,
            [self._choice(i, out) for i, out in enumerate(outputs)],
            wire_usage(usage),
            FINGERPRINT,
        )

    def _choice(self, index: int, out: ChoiceOutput) -> ChatChoice:
        calls = [_call(call.id, call.name, call.arguments) for call in out.calls] or None
        message = AssistantMessage(
            "assistant",
            out.text or None if calls else out.text,
            None,
            out.reasoning or None,
            calls,
        )
        return ChatChoice(index, message, self.logprobs.render(out.tokens, index), out.finish.reason)

    # --- a stream ----------------------------------------------------------------------

    def opening(self, choices: int) -> bytes:
        """The first chunk of each choice: the role, and empty content."""
        return b"".join(self._frame(i, Delta(role="assistant", content="")) for i in range(choices))

    def frames(self, index: int, events: Sequence[Event]) -> bytes:
        """The chunks for one delivery of a choice's events, in their order."""
        if len(events) == 1:  # the common cases: one step of answer or of thinking
            only = events[0]
            if isinstance(only, TextDelta):
                return self._frame(index, Delta(content=only.text), self._render(only.tokens, index))
            if isinstance(only, ReasoningDelta):
                return self._frame(index, Delta(reasoning_content=only.text))
        out: list[bytes] = []
        text: list[str] = []
        tokens: list[TokenInfo] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []

        def flush() -> None:
            if text or tokens:
                out.append(self._frame(index, Delta(content="".join(text)), self._render(tokens, index)))
                text.clear()
                tokens.clear()
            if reasoning:
                out.append(self._frame(index, Delta(reasoning_content="".join(reasoning))))
                reasoning.clear()
            if calls:
                out.append(self._frame(index, Delta(tool_calls=list(calls))))
                calls.clear()

        for event in events:
            if isinstance(event, TextDelta):
                if reasoning or calls:
                    flush()
                text.append(event.text)
                if event.tokens:
                    tokens.extend(event.tokens)
            elif isinstance(event, ReasoningDelta):
                if text or tokens or calls:
                    flush()
                reasoning.append(event.text)
            elif isinstance(event, ToolCallStart | ToolCallDelta):
                if text or tokens or reasoning:
                    flush()
                _add_call_delta(calls, event)
            elif isinstance(event, Finish):
                flush()
                out.append(self._frame(index, Delta(), None, event.reason))
        flush()
        return b"".join(out)

    def usage_frame(self, usage: Usage) -> bytes:
        """The final usage-only chunk (``stream_options.include_usage``)."""
        body = ChatCompletionChunk(
            self.id, self.created, self.model, [], FINGERPRINT, usage=wire_usage(usage)
        )
        return sse_frame(body)

    def _render(self, tokens: list[TokenInfo] | None, index: int) -> AnyLogprobs | None:
        return self.logprobs.render(tokens, index) if tokens else None

    def _frame(
        self, index: int, delta: Delta, logprobs: AnyLogprobs | None = None, finish: str | None = None
    ) -> bytes:
        body = ChatCompletionChunk(
            self.id, self.created, self.model, [ChunkChoice(index, delta, logprobs, finish)], FINGERPRINT
        )
        return sse_frame(body)


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _add_call_delta(calls: list[dict[str, Any]], event: ToolCallStart | ToolCallDelta) -> None:
    """A tool call's start or arguments as a ``delta.tool_calls`` entry (merged per call)."""
    if isinstance(event, ToolCallStart):
        calls.append({"index": event.index, **_call(event.id, event.name, "")})
        return
    if calls and calls[-1]["index"] == event.index:
        calls[-1]["function"]["arguments"] += event.arguments
    else:
        calls.append({"index": event.index, "function": {"arguments": event.arguments}})
