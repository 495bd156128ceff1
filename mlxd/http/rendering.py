"""Build OpenAI responses and SSE frames from generation events (the hot path)."""

from __future__ import annotations

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
    _offset: int = 0

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.id

    def render_logprobs(self, tokens: Sequence[TokenInfo]) -> AnyLogprobs | None:
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
        for t in tokens:
            offsets.append(self._offset)
            self._offset += len(t.text)
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

    def complete(
        self, text: str, tokens: list[TokenInfo], finish: str, usage: Usage
    ) -> ChatCompletion | TextCompletion:
        """The non-streaming response body."""
        logprobs = self.render_logprobs(tokens)
        if self.chat:
            return ChatCompletion(
                self.response_id,
                self.created,
                self.model,
                [ChatChoice(0, AssistantMessage(content=text), logprobs, finish)],
                usage,
                FINGERPRINT,
            )
        return TextCompletion(
            self.response_id,
            self.created,
            self.model,
            [TextChoice(0, self.echo + text, logprobs, finish)],
            FINGERPRINT,
            usage=usage,
        )

    def frame(
        self, text: str | None, logprobs: AnyLogprobs | None, finish: str | None, role: bool = False
    ) -> bytes:
        """One SSE ``data:`` frame."""
        if self.chat:
            delta = Delta(role="assistant", content=text) if role else Delta(content=text)
            body: Any = ChatCompletionChunk(
                self.response_id,
                self.created,
                self.model,
                [ChunkChoice(0, delta, logprobs, finish)],
                FINGERPRINT,
            )
        else:
            body = TextCompletion(
                self.response_id,
                self.created,
                self.model,
                [TextChoice(0, text or "", logprobs, finish)],
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
