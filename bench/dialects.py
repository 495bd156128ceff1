"""One streamed request through each dialect against Chat Completions, side by side.

``python -m bench.dialects [--tokens N] [--reps R]`` builds the tiny model, starts
``mlxd serve`` on it, and sends one greedy streamed request at a time through Chat
Completions, Responses, Anthropic Messages, Ollama ``/api/chat`` and ``/api/generate``,
interleaved (the order rotates each repetition), each with a prompt of its own (no
prompt-cache hits) that renders to the same template for every dialect. tokens/s = the tokens the response
itself reports / wall time from sending to the last byte; the ratio to Chat Completions
is paired (the median over repetitions of the two rates measured seconds apart). It
prints a Markdown table for ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.models import TINY
from bench.prompts import request_messages
from bench.servers import start_mlxd


def _chat(payload: dict[str, Any]) -> int | None:
    usage = payload.get("usage")
    return int(usage["completion_tokens"]) if usage else None


def _responses(payload: dict[str, Any]) -> int | None:
    if payload.get("type") in ("response.completed", "response.incomplete"):  # at max_output_tokens
        return int(payload["response"]["usage"]["output_tokens"])
    return None


def _anthropic(payload: dict[str, Any]) -> int | None:
    if payload.get("type") == "message_delta":
        return int(payload["usage"]["output_tokens"])
    return None


def _ollama(payload: dict[str, Any]) -> int | None:
    return int(payload["eval_count"]) if payload.get("done") else None


#: name -> (path, body for messages and a token count, what reports the tokens, NDJSON?)
Dialect = tuple[
    str, Callable[[list[dict[str, str]], int], dict[str, Any]], Callable[[dict[str, Any]], int | None], bool
]
DIALECTS: dict[str, Dialect] = {
    "chat completions": (
        "/v1/chat/completions",
        lambda m, n: {
            "messages": m,
            "max_tokens": n,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        _chat,
        False,
    ),
    "responses": (
        "/v1/responses",
        lambda m, n: {"input": m, "max_output_tokens": n, "stream": True},
        _responses,
        False,
    ),
    "anthropic messages": (
        "/v1/messages",
        lambda m, n: {"model": "bench", "messages": m, "max_tokens": n, "stream": True},
        _anthropic,
        False,
    ),
    "ollama /api/chat": (
        "/api/chat",
        lambda m, n: {"model": "bench", "messages": m, "options": {"num_predict": n}},
        _ollama,
        True,
    ),
    "ollama /api/generate": (
        "/api/generate",
        lambda m, n: {"model": "bench", "prompt": m[-1]["content"], "options": {"num_predict": n}},
        _ollama,
        True,
    ),
}


def one(client: httpx.Client, dialect: Dialect, messages: list[dict[str, str]], tokens: int) -> float:
    """tokens/s of one streamed request, end to end."""
    path, body, count, ndjson = dialect
    started = time.perf_counter()
    reported = None
    with client.stream("POST", path, json=body(messages, tokens)) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            data = line if ndjson else line.removeprefix("data: ") if line.startswith("data: ") else ""
            if data and data != "[DONE]":
                reported = count(json.loads(data)) or reported
    elapsed = time.perf_counter() - started
    if reported != tokens:
        raise RuntimeError(f"{path} reported {reported} tokens, not {tokens}")
    return tokens / elapsed


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.dialects", description=__doc__)
    parser.add_argument("--tokens", type=int, default=256, help="tokens per request (default 256)")
    parser.add_argument("--reps", type=int, default=15, help="repetitions per dialect (default 15)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = TINY.build(Path(tmp) / "tiny")
        server = start_mlxd(model, Path(tmp) / "mlxd")
        try:
            server.wait_healthy()
            rates: dict[str, list[float]] = {name: [] for name in DIALECTS}
            names = list(DIALECTS)
            numbers = itertools.count(1)
            with httpx.Client(base_url=server.url, timeout=120) as client:
                for name in names:  # warm up every route once
                    one(client, DIALECTS[name], request_messages(0), 8)
                for rep in range(args.reps):
                    order = names[rep % len(names) :] + names[: rep % len(names)]
                    for name in order:
                        messages = request_messages(next(numbers))  # unique: no prompt-cache hits
                        rates[name].append(one(client, DIALECTS[name], messages, args.tokens))
        finally:
            server.stop()
    base = rates["chat completions"]
    print(f"{args.reps} repetitions × {args.tokens} tokens, streamed, greedy, tiny model\n")
    print("| dialect | median tok/s | / chat completions (paired median) |")
    print("|---|---|---|")
    for name, values in rates.items():
        paired = statistics.median(v / b for v, b in zip(values, base, strict=True))
        print(f"| {name} | {statistics.median(values):.0f} | {paired:.3f}× |")


if __name__ == "__main__":
    main()
