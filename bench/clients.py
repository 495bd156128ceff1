"""An asyncio HTTP client that times OpenAI chat requests, streaming (SSE) or not.

Every content chunk is stamped when its bytes arrive. A chunk may carry several
tokens, so token counts come from the server's ``usage`` (``stream_options:
{"include_usage": true}``), which both servers send; chunks are counted separately.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from bench.prompts import Message, request_messages

_decode = msgspec.json.decode


@dataclass(slots=True)
class RequestResult:
    """One request: when it was sent, when each content chunk arrived, what usage said."""

    start: float
    times: list[float] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    end: float = 0.0
    text: str = ""
    error: str | None = None

    @property
    def ttft(self) -> float:
        """Seconds from sending to the first content (the whole request when not streaming)."""
        return (self.times[0] if self.times else self.end) - self.start

    @property
    def gaps(self) -> list[float]:
        """Seconds between consecutive content chunks."""
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]

    @property
    def duration(self) -> float:
        """Seconds from sending to the end of the response."""
        return self.end - self.start


@dataclass(slots=True)
class LoadResult:
    """Many requests: their results and wall time; the server's CPU time and decode steps if known."""

    wall: float
    results: list[RequestResult]
    cpu: float = float("nan")
    steps: float = float("nan")
    client_cpu: float = float("nan")

    @property
    def tokens(self) -> int:
        """Completion tokens of every request."""
        return sum(r.tokens for r in self.results)

    @property
    def errors(self) -> int:
        """Requests that failed."""
        return sum(1 for r in self.results if r.error is not None)


def chat_body(messages: list[Message], max_tokens: int, *, stream: bool) -> dict[str, Any]:
    """A greedy chat request for the server's default model (both servers have one)."""
    body: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def numbered_bodies(offset: int, max_tokens: int, *, stream: bool) -> Callable[[int], dict[str, Any]]:
    """Bodies of unique short requests, numbered from ``offset`` (for ``closed_loop``)."""
    return lambda i: chat_body(request_messages(offset + i), max_tokens, stream=stream)


def new_client(base_url: str, connections: int) -> httpx.AsyncClient:
    """A client with room for ``connections`` parallel requests and generous timeouts."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=httpx.Timeout(600.0))


async def request(client: httpx.AsyncClient, body: dict[str, Any], origin: float) -> RequestResult:
    """Send one chat request; times are seconds since ``origin`` (a perf_counter reading)."""
    result = RequestResult(start=time.perf_counter() - origin)
    try:
        if body.get("stream"):
            await _stream(client, body, origin, result)
        else:
            await _whole(client, body, result)
    except (httpx.HTTPError, msgspec.DecodeError, KeyError, IndexError) as exc:
        result.error = _describe(exc)
    result.end = time.perf_counter() - origin
    if not body.get("stream") and result.error is None:
        result.times.append(result.end)
    return result


def _describe(exc: BaseException) -> str:
    """The error and, when it says nothing itself, the low-level error behind it."""
    if str(exc):
        return f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause):
        return f"{type(exc).__name__}: {type(cause).__name__}: {cause}"
    if isinstance(exc, httpx.ReadError):
        return "ReadError: the server closed or reset the connection"
    return type(exc).__name__


async def _whole(client: httpx.AsyncClient, body: dict[str, Any], result: RequestResult) -> None:
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    payload = _decode(response.content)
    result.text = payload["choices"][0]["message"]["content"] or ""
    _read_usage(payload, result)


async def _stream(
    client: httpx.AsyncClient, body: dict[str, Any], origin: float, result: RequestResult
) -> None:
    parts: list[str] = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        buffer = b""
        async for data in response.aiter_raw():
            now = time.perf_counter() - origin
            buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                _read_event(event, now, result, parts)
    result.text = "".join(parts)


def _read_event(event: bytes, now: float, result: RequestResult, parts: list[str]) -> None:
    for line in event.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue  # comments (":" keep-alives) and the end marker
        payload = _decode(line[6:])
        if "error" in payload and "choices" not in payload:
            raise httpx.HTTPError(f"in-stream error: {payload['error']}")
        for choice in payload.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if content:
                result.times.append(now)
                parts.append(content)
        _read_usage(payload, result)


def _read_usage(payload: dict[str, Any], result: RequestResult) -> None:
    usage = payload.get("usage")
    if usage:
        result.tokens = int(usage["completion_tokens"])
        result.prompt_tokens = int(usage["prompt_tokens"])
        details = usage.get("prompt_tokens_details") or {}
        result.cached_tokens = int(details.get("cached_tokens") or 0)


async def closed_loop(
    client: httpx.AsyncClient, make_body: Callable[[int], dict[str, Any]], total: int, concurrency: int
) -> LoadResult:
    """``total`` requests from ``concurrency`` clients, each sending its next as soon as one ends."""
    origin, cpu = time.perf_counter(), time.process_time()
    results: list[RequestResult] = []
    counter = iter(range(total))

    async def one_client() -> None:
        for index in counter:
            results.append(await request(client, make_body(index), origin))

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return LoadResult(time.perf_counter() - origin, results, client_cpu=time.process_time() - cpu)
