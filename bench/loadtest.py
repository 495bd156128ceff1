"""A bounded load and fault run against mlxd on loopback: ``python -m bench.loadtest``.

Many clients for a fixed time, each looping over a mix of streams, streams abandoned
mid-way, non-streaming requests abandoned mid-way, bad requests and plain requests,
against a daemon whose batch and queue are small enough to overflow. It reports
requests by outcome, p99 latency and RSS, and checks: no 5xx, no hung or reset
connection, every accepted request completed, no sequence left behind, RSS after the
run within 10% of RSS after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.servers import ServerProcess, start_mlxd_with
from bench.stats import percentile

CONFIG = """\
[server]
port = {port}
[runtime]
max_batch_size = 16
max_queue = 32
keep_alive = "forever"
prompt_cache_bytes = "{cache}"
[limits]
max_tokens = 64
[defaults]
temperature = 0.7
[models.tiny]
model = "{model}"
default = true
"""
ACTIONS = ("stream", "stream_abandoned", "whole", "whole_abandoned", "bad")
WEIGHTS = (35, 15, 25, 10, 15)
BAD_BODIES: tuple[Any, ...] = (
    b"{",
    {"messages": []},
    {"messages": "x"},
    {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
    {"top_k": 10**9, "messages": [{"role": "user", "content": "x"}]},
)


@dataclass
class Tally:
    """What happened, by outcome."""

    outcomes: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    incomplete: int = 0
    transport_errors: list[str] = field(default_factory=list)
    last: int = 0


def _body(rng: random.Random, stream: bool) -> dict[str, Any]:
    words = " ".join(rng.choice(("alpha", "beta", "gamma", "delta")) for _ in range(rng.randint(3, 60)))
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": words}],
        "max_tokens": rng.randint(8, 64),
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
        "seed": rng.randint(0, 10**6),
    }


async def _one(http: httpx.AsyncClient, rng: random.Random, tally: Tally) -> None:
    action = rng.choices(ACTIONS, WEIGHTS)[0]
    started = time.perf_counter()
    try:
        if action == "bad":
            bad = rng.choice(BAD_BODIES)
            response = await http.post(
                "/v1/chat/completions",
                content=bad if isinstance(bad, bytes) else json.dumps(bad).encode(),
                headers={"content-type": "application/json"},
            )
            tally.statuses[response.status_code] += 1
            tally.last = response.status_code
        elif action.startswith("stream"):
            async with http.stream("POST", "/v1/chat/completions", json=_body(rng, True)) as response:
                tally.statuses[response.status_code] += 1
                tally.last = response.status_code
                if response.status_code == 200:
                    events = 0
                    last = ""
                    async for line in response.aiter_lines():
                        if line:
                            events += 1
                            last = line
                            if action == "stream_abandoned" and events >= 3:
                                break
                    if action == "stream" and last != "data: [DONE]":
                        tally.incomplete += 1
                else:
                    await response.aread()
        else:
            timeout = 0.05 if action == "whole_abandoned" else 120.0
            try:
                response = await http.post("/v1/chat/completions", json=_body(rng, False), timeout=timeout)
                tally.statuses[response.status_code] += 1
                tally.last = response.status_code
                if response.status_code == 200 and response.json()["choices"][0]["finish_reason"] not in (
                    "stop",
                    "length",
                ):
                    tally.incomplete += 1
            except httpx.TimeoutException:
                if action != "whole_abandoned":
                    raise
                action = "whole_abandoned(left)"
        tally.outcomes[action] += 1
        tally.latencies.append(time.perf_counter() - started)
        if tally.last == 429:
            await asyncio.sleep(rng.uniform(0.2, 1.0))  # back off, as Retry-After asks
    except httpx.TimeoutException:
        tally.outcomes["hung"] += 1
    except httpx.TransportError as exc:
        tally.transport_errors.append(f"{action}: {type(exc).__name__}")


async def _client(url: str, seconds: float, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=120.0) as http:
        while time.monotonic() < deadline:
            await _one(http, rng, tally)


async def _load(url: str, clients: int, seconds: float) -> Tally:
    tally = Tally()
    await asyncio.gather(*[_client(url, seconds, seed, tally) for seed in range(clients)])
    return tally


def _status(server: ServerProcess) -> dict[str, Any]:
    return httpx.get(server.url + "/mlxd/status", timeout=10).json()  # type: ignore[no-any-return]


def run(model: Path, clients: int, seconds: float, workdir: Path, cache: str = "256MB") -> dict[str, Any]:
    """Start a daemon, warm it up, load it, and return the figures and the verdicts."""
    server = start_mlxd_with(CONFIG.format(port="{port}", model=model, cache=cache), workdir)
    try:
        server.wait_healthy()
        # Warm-up at the same load: batch buffers and caches reach their working size first.
        asyncio.run(_load(server.url, clients, max(5.0, seconds / 4)))
        rss_warm = server.rss_kb()
        memory_warm = _status(server)["memory"]
        started = time.perf_counter()
        tally = asyncio.run(_load(server.url, clients, seconds))
        elapsed = time.perf_counter() - started
        deadline = time.monotonic() + 10
        while _status(server)["active_sequences"] and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _status(server)["active_sequences"]
        healthy = httpx.get(server.url + "/health", timeout=10).status_code == 200
        rss_after = server.rss_kb()
        memory_after = _status(server)["memory"]
    finally:
        server.stop()
    fivexx = sum(n for status, n in tally.statuses.items() if status >= 500)
    growth = (rss_after - rss_warm) / rss_warm
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": sum(tally.outcomes.values()) + len(tally.transport_errors),
        "by_outcome": dict(sorted(tally.outcomes.items())),
        "by_status": {str(k): v for k, v in sorted(tally.statuses.items())},
        "p50_latency_s": round(percentile(tally.latencies, 50), 3),
        "p99_latency_s": round(percentile(tally.latencies, 99), 3),
        "transport_errors": len(tally.transport_errors),
        "hung": tally.outcomes.get("hung", 0),
        "incomplete": tally.incomplete,
        "sequences_left": left,
        "healthy_after": healthy,
        "rss_warm_mb": round(rss_warm / 1024, 1),
        "rss_after_mb": round(rss_after / 1024, 1),
        "rss_growth_pct": round(100 * growth, 1),
        "mlx_active_mb_warm_after": [
            round(m["mlx_active_bytes"] / 2**20, 1) for m in (memory_warm, memory_after)
        ],
        "prompt_cache_mb_after": round(memory_after["prompt_cache_bytes"] / 2**20, 1),
        "ok": fivexx == 0
        and not tally.transport_errors
        and not tally.incomplete
        and not left
        and healthy
        and tally.outcomes.get("hung", 0) == 0
        and growth <= 0.10,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--prompt-cache", default="256MB", help="the daemon's prompt_cache_bytes")
    args = parser.parse_args(argv)
    from mlxd.runtime.demo_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        figures = run(model, args.clients, args.seconds, Path(tmp) / "work", args.prompt_cache)
    return report(figures, args.json)


def report(figures: dict[str, Any], path: Path | None) -> int:
    """Print the figures as JSON (and write them to ``path``); the exit code of the verdict."""
    print(json.dumps(figures, indent=2))
    if path is not None:
        path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
