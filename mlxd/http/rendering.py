"""Build OpenAI responses and SSE frames from generation events (the hot path)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from mlxd import __version__
from mlxd.http.ids import new_id
from mlxd.http.metrics import Meter
from mlxd.protocol.responses import (
    AnyLogprobs,
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatLogprobs,
    ChunkChoice,
    Delta,
    LegacyLogprobs,
    PromptTokensDetails,
    SeedLogprobs,
    SeedTopLogprob,
    TextChoice,
    TextCompletion,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from mlxd.runtime.engine import GenerationEvent, GenerationStream, TokenInfo
from mlxd.runtime.reasoning import ReasoningFormat, ReasoningSplitter, split_reasoning
from mlxd.runtime.tool_calls import ToolCallSplitter, ToolFormat, split_tool_calls

FINGERPRINT = f"mlxd-{__version__}"
_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class Renderer:
    """Renders one request's events in its endpoint's shape."""

    chat: bool
    model: str
    logprobs: str | None
    echo: str = ""
    #: The request's tool definitions, handed to the model's tool-call parser.
    tools: Any = None
    id: str = field(default_factory=new_id)
    created: int = field(default_factory=lambda: int(time.time()))
    _offsets: dict[int, int] = field(default_factory=dict)

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.id

    def render_logprobs(self, tokens: Sequence[TokenInfo], index: int = 0) -> AnyLogprobs | None:
        """The logprobs of some tokens in the shape the request asked for."""
        if self.logprobs is None:
            return None
        if self.logprobs == "openai":
            return ChatLogprobs(
                [
                    TokenLogprob(
                        t.text, t.logprob, list(t.raw), [TopLogprob(s, v, list(r)) for _, s, r, v in t.top]
                    )
                    for t in tokens
                ]
            )
        if self.logprobs == "seed":
            return SeedLogprobs(
                token_logprobs=[t.logprob for t in tokens],
                tokens=[t.id for t in tokens],
                top_logprobs=[[SeedTopLogprob(i, s, v) for i, s, _, v in t.top] for t in tokens],
            )
        offsets = []
        offset = self._offsets.get(index, 0)
        for t in tokens:
            offsets.append(offset)
            offset += len(t.text)
        self._offsets[index] = offset
        return LegacyLogprobs(
            tokens=[t.text for t in tokens],
            token_logprobs=[t.logprob for t in tokens],
            top_logprobs=[{s: v for _, s, _, v in t.top} for t in tokens],
            text_offset=offsets,
            token_ids=[t.id for t in tokens],
        )

    def usage(self, stream: GenerationStream, completion_tokens: int) -> Usage:
        """Token counts for the usage field."""
        return Usage(
            prompt_tokens=stream.prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=stream.prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(stream.cached_tokens),
        )

    def complete(self, results: Sequence[Collected], usage: Usage) -> ChatCompletion | TextCompletion:
        """The non-streaming response body, one choice per result."""
        if self.chat:
            return ChatCompletion(
                self.response_id,
                self.created,
                self.model,
                [self._chat_choice(i, r) for i, r in enumerate(results)],
                usage,
                FINGERPRINT,
            )
        return TextCompletion(
            self.response_id,
            self.created,
            self.model,
            [
                TextChoice(i, self.echo + r.text, self.render_logprobs(r.tokens, i), r.finish_reason)
                for i, r in enumerate(results)
            ],
            FINGERPRINT,
            usage=usage,
        )

    def _chat_choice(self, index: int, result: Collected) -> ChatChoice:
        logprobs = self.render_logprobs(result.tokens, index)
        text, reasoning = result.text, None
        if result.reasoning_format is not None:
            thought, text = split_reasoning(result.reasoning_format, text)
            reasoning = thought or None
        if result.tool_format is None:
            message = AssistantMessage("assistant", text, reasoning)
            return ChatChoice(index, message, logprobs, result.finish_reason)
        content, calls = split_tool_calls(result.tool_format, self.tools, text)
        if not calls:
            return ChatChoice(
                index, AssistantMessage("assistant", content, reasoning), logprobs, result.finish_reason
            )
        finish = "tool_calls" if result.finish_reason == "stop" else result.finish_reason
        return ChatChoice(
            index, AssistantMessage("assistant", content or None, reasoning, calls), logprobs, finish
        )

    def reasoning_frame(self, reasoning: str, index: int) -> bytes:
        """A chunk of thinking text (``delta.reasoning_content``)."""
        body = ChatCompletionChunk(
            self.response_id,
            self.created,
            self.model,
            [ChunkChoice(index, Delta(reasoning_content=reasoning), None, None)],
            FINGERPRINT,
        )
        return b"data: " + _encode(body) + b"\n\n"

    def tool_frame(self, calls: list[dict[str, Any]], index: int) -> bytes:
        """A chunk announcing complete tool calls (name and all arguments at once)."""
        body = ChatCompletionChunk(
            self.response_id,
            self.created,
            self.model,
            [ChunkChoice(index, Delta(tool_calls=calls), None, None)],
            FINGERPRINT,
        )
        return b"data: " + _encode(body) + b"\n\n"

    def frame(
        self,
        text: str | None,
        logprobs: AnyLogprobs | None,
        finish: str | None,
        role: bool = False,
        index: int = 0,
    ) -> bytes:
        """One SSE ``data:`` frame."""
        if self.chat:
            delta = Delta(role="assistant", content=text) if role else Delta(content=text)
            body: Any = ChatCompletionChunk(
                self.response_id,
                self.created,
                self.model,
                [ChunkChoice(index, delta, logprobs, finish)],
                FINGERPRINT,
            )
        else:
            body = TextCompletion(
                self.response_id,
                self.created,
                self.model,
                [TextChoice(index, text or "", logprobs, finish)],
                FINGERPRINT,
            )
        return b"data: " + _encode(body) + b"\n\n"

    def usage_frame(self, usage: Usage) -> bytes:
        """The final usage-only chunk (``stream_options.include_usage``)."""
        body: Any
        if self.chat:
            body = ChatCompletionChunk(
                self.response_id, self.created, self.model, [], FINGERPRINT, usage=usage
            )
        else:
            body = TextCompletion(self.response_id, self.created, self.model, [], FINGERPRINT, usage=usage)
        return b"data: " + _encode(body) + b"\n\n"


def error_frame(message: str) -> bytes:
    """An error after the stream started: one ``data: {"error": ...}`` event, then the end."""
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": "internal_error"}}
    return b"data: " + _encode(body) + b"\n\n"


class _Choice:
    """One choice's stream state: its tool-call splitter and its token count."""

    __slots__ = ("completion_tokens", "index", "splitter", "thinking", "tool_calls")

    def __init__(self, index: int, stream: GenerationStream, tools: Any) -> None:
        self.index = index
        self.completion_tokens = 0
        self.tool_calls = 0
        fmt = stream.tool_format
        self.splitter = ToolCallSplitter(fmt, tools) if fmt is not None else None
        thinking = stream.reasoning_format
        self.thinking = ReasoningSplitter(thinking) if thinking is not None else None

    def frames(self, renderer: Renderer, events: list[GenerationEvent]) -> bytes:
        """The frames for one batch of ready events (content, tool calls, finish)."""
        last = events[-1]
        text = "".join([e.text for e in events]) if len(events) > 1 else last.text
        tokens = [t for e in events if e.tokens for t in e.tokens] if renderer.logprobs else None
        self.completion_tokens = last.completion_tokens
        calls: list[dict[str, Any]] = []
        reasoning = ""
        if self.thinking is not None:
            reasoning, text = self.thinking.feed(text)
            if last.finish_reason is not None:
                more_reasoning, more_text = self.thinking.flush()
                reasoning, text = reasoning + more_reasoning, text + more_text
        if self.splitter is not None:
            text, calls = self.splitter.feed(text)
            if last.finish_reason is not None:
                text += self.splitter.flush()
        out = renderer.reasoning_frame(reasoning, self.index) if reasoning else b""
        if text or tokens:
            out += renderer.frame(
                text, renderer.render_logprobs(tokens, self.index) if tokens else None, None, index=self.index
            )
        if calls:
            numbered = [{"index": self.tool_calls + k, **call} for k, call in enumerate(calls)]
            self.tool_calls += len(calls)
            out += renderer.tool_frame(numbered, self.index)
        if last.finish_reason is not None:
            finish = "tool_calls" if self.tool_calls and last.finish_reason == "stop" else last.finish_reason
            out += renderer.frame(None if renderer.chat else "", None, finish, index=self.index)
        return out


async def sse(
    stream: GenerationStream, renderer: Renderer, include_usage: bool, meter: Meter | None = None
) -> AsyncIterator[bytes]:
    """The SSE body: role chunk, content chunks (one per ready batch), finish, usage, [DONE]."""
    choice = _Choice(0, stream, renderer.tools)
    try:
        yield renderer.frame(renderer.echo if not renderer.chat else "", None, None, role=True)
        async for events in stream:
            last = events[-1]
            if last.finish_reason == "error":
                yield error_frame(last.error or "generation failed")
                return
            if meter is not None:
                meter.first_token()
            out = choice.frames(renderer, events)
            if last.finish_reason is not None:
                if include_usage:
                    out += renderer.usage_frame(renderer.usage(stream, choice.completion_tokens))
                out += DONE
            yield out
    finally:
        stream.cancel()
        if meter is not None:
            meter.done(stream.prompt_tokens, choice.completion_tokens)


async def sse_choices(
    streams: Sequence[GenerationStream], renderer: Renderer, include_usage: bool, meter: Meter | None = None
) -> AsyncIterator[bytes]:
    """The SSE body for ``n`` > 1: the choices' chunks interleaved as they come, each with its index."""
    ready: asyncio.Queue[tuple[int, list[GenerationEvent]]] = asyncio.Queue()

    async def pump(index: int, stream: GenerationStream) -> None:
        async for events in stream:
            ready.put_nowait((index, events))

    pumps = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    choices = [_Choice(i, s, renderer.tools) for i, s in enumerate(streams)]
    try:
        first = renderer.echo if not renderer.chat else ""
        yield b"".join(renderer.frame(first, None, None, role=True, index=i) for i in range(len(streams)))
        remaining = len(streams)
        while remaining:
            index, events = await ready.get()
            if events[-1].finish_reason == "error":
                yield error_frame(events[-1].error or "generation failed")
                return
            if meter is not None:
                meter.first_token()
            if events[-1].finish_reason is not None:
                remaining -= 1
            yield choices[index].frames(renderer, events)
        total = sum(c.completion_tokens for c in choices)
        tail = renderer.usage_frame(renderer.usage(streams[0], total)) if include_usage else b""
        yield tail + DONE
    finally:
        for task in pumps:
            task.cancel()
        for stream in streams:
            stream.cancel()
        if meter is not None:
            for choice, stream in zip(choices, streams, strict=True):
                meter.done(stream.prompt_tokens if choice.index == 0 else 0, choice.completion_tokens)


@dataclass(slots=True)
class Collected:
    """A whole generation, gathered for a non-streaming response."""

    text: str
    tokens: list[TokenInfo]
    finish_reason: str
    completion_tokens: int
    error: str | None = None
    tool_format: ToolFormat | None = None
    reasoning_format: ReasoningFormat | None = None


async def collect(
    stream: GenerationStream, want_tokens: bool, meter: Meter | None = None, *, first_choice: bool = True
) -> Collected:
    """Gather every event of a stream (``first_choice`` counts the shared prompt's tokens)."""
    parts: list[str] = []
    tokens: list[TokenInfo] = []
    last = GenerationEvent(finish_reason="error", error="no output")
    try:
        async for events in stream:
            if meter is not None:
                meter.first_token()
            for event in events:
                parts.append(event.text)
                if want_tokens and event.tokens:
                    tokens.extend(event.tokens)
            last = events[-1]
    finally:
        stream.cancel()
        if meter is not None:
            meter.done(stream.prompt_tokens if first_choice else 0, last.completion_tokens)
    finish = last.finish_reason or "error"
    return Collected(
        "".join(parts),
        tokens,
        finish,
        last.completion_tokens,
        last.error,
        stream.tool_format,
        stream.reasoning_format,
    )
