"""Build OpenAI responses and SSE frames from generation events (the hot path)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from mlxd import __version__
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

FINGERPRINT = f"mlxd-{__version__}"
_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


@dataclass(slots=True)
class Renderer:
    """Renders one request's events in its endpoint's shape."""

    chat: bool
    model: str
    logprobs: str | None
    echo: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
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
                        t.text, t.logprob, _bytes(t.text), [TopLogprob(s, v, _bytes(s)) for _, s, v in t.top]
                    )
                    for t in tokens
                ]
            )
        if self.logprobs == "seed":
            return SeedLogprobs(
                token_logprobs=[t.logprob for t in tokens],
                tokens=[t.id for t in tokens],
                top_logprobs=[[SeedTopLogprob(i, s, v) for i, s, v in t.top] for t in tokens],
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
            top_logprobs=[{s: v for _, s, v in t.top} for t in tokens],
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
                [
                    ChatChoice(
                        i,
                        AssistantMessage(content=r.text),
                        self.render_logprobs(r.tokens, i),
                        r.finish_reason,
                    )
                    for i, r in enumerate(results)
                ],
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


async def sse(
    stream: GenerationStream, renderer: Renderer, include_usage: bool, meter: Meter | None = None
) -> AsyncIterator[bytes]:
    """The SSE body: role chunk, content chunks (one per ready batch), finish, usage, [DONE]."""
    completion_tokens = 0
    try:
        yield renderer.frame(renderer.echo if not renderer.chat else "", None, None, role=True)
        async for events in stream:
            last = events[-1]
            if last.finish_reason == "error":
                yield error_frame(last.error or "generation failed")
                return
            text = "".join([e.text for e in events]) if len(events) > 1 else last.text
            tokens = [t for e in events if e.tokens for t in e.tokens] if renderer.logprobs else None
            completion_tokens = last.completion_tokens
            out = b""
            if meter is not None:
                meter.first_token()
            if text or tokens:
                out = renderer.frame(text, renderer.render_logprobs(tokens) if tokens else None, None)
            if last.finish_reason is not None:
                out += renderer.frame(None if renderer.chat else "", None, last.finish_reason)
                if include_usage:
                    out += renderer.usage_frame(renderer.usage(stream, completion_tokens))
                out += DONE
            yield out
    finally:
        stream.cancel()
        if meter is not None:
            meter.done(stream.prompt_tokens, completion_tokens)


async def sse_choices(
    streams: Sequence[GenerationStream], renderer: Renderer, include_usage: bool, meter: Meter | None = None
) -> AsyncIterator[bytes]:
    """The SSE body for ``n`` > 1: the choices' chunks interleaved as they come, each with its index."""
    ready: asyncio.Queue[tuple[int, list[GenerationEvent]]] = asyncio.Queue()

    async def pump(index: int, stream: GenerationStream) -> None:
        async for events in stream:
            ready.put_nowait((index, events))

    pumps = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    completion = [0] * len(streams)
    try:
        first = renderer.echo if not renderer.chat else ""
        yield b"".join(renderer.frame(first, None, None, role=True, index=i) for i in range(len(streams)))
        remaining = len(streams)
        while remaining:
            index, events = await ready.get()
            last = events[-1]
            if last.finish_reason == "error":
                yield error_frame(last.error or "generation failed")
                return
            if meter is not None:
                meter.first_token()
            text = "".join([e.text for e in events])
            tokens = [t for e in events if e.tokens for t in e.tokens] if renderer.logprobs else None
            completion[index] = last.completion_tokens
            out = b""
            if text or tokens:
                logprobs = renderer.render_logprobs(tokens, index) if tokens else None
                out = renderer.frame(text, logprobs, None, index=index)
            if last.finish_reason is not None:
                remaining -= 1
                out += renderer.frame(None if renderer.chat else "", None, last.finish_reason, index=index)
            yield out
        tail = renderer.usage_frame(renderer.usage(streams[0], sum(completion))) if include_usage else b""
        yield tail + DONE
    finally:
        for task in pumps:
            task.cancel()
        for stream in streams:
            stream.cancel()
        if meter is not None:
            for i, (stream, tokens_done) in enumerate(zip(streams, completion, strict=True)):
                meter.done(stream.prompt_tokens if i == 0 else 0, tokens_done)


@dataclass(slots=True)
class Collected:
    """A whole generation, gathered for a non-streaming response."""

    text: str
    tokens: list[TokenInfo]
    finish_reason: str
    completion_tokens: int
    error: str | None = None


async def collect(stream: GenerationStream, want_tokens: bool, meter: Meter | None = None) -> Collected:
    """Gather every event of a stream."""
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
            meter.done(stream.prompt_tokens, last.completion_tokens)
    return Collected(
        "".join(parts), tokens, last.finish_reason or "error", last.completion_tokens, last.error
    )
