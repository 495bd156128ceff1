"""Embeddings: throughput against the raw engine, and what a burst does to open streams.

``python -m bench.embeddings [--reps R]`` builds a small decoder embedding model (qwen3,
hidden 128, 4 layers; sentence-transformers files: last-token pooling, normalized), serves
it with ``mlxd serve`` and measures, in one run:

1. inputs/s at batch 1, 32 and 256 (one request of that many inputs at a time, float
   vectors through ``/v1/embeddings``) against the raw engine: the same inputs through the
   model's own forward pass in-process (right-padded batch, last-token pooling,
   normalization, evaluated), in batches of the same size;
2. the inter-chunk gap of one stream (``stream_interval = 0``: a chunk per token) alone,
   and while bursts of 256 embedding inputs run beside it: p50 / p99 / max, next to the
   time one prefill step (``prefill_step_size`` tokens) takes in the raw engine.

It prints Markdown for ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.servers import start_mlxd_with

SIZES = {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256}
PREFILL_STEP = 256
BATCHES = (1, 32, 256)


def texts(count: int, offset: int = 0) -> list[str]:
    """Inputs of 8 to 40 words, different each time."""
    return [
        f"document {offset + i} says " + "words and more words " * (2 + (offset + i) % 8)
        for i in range(count)
    ]


def raw_rate(model_dir: Path, batch: int, total: int) -> tuple[float, float]:
    """(inputs/s of the raw engine, seconds of one prefill step) on the same inputs."""
    import mlx.core as mx
    from mlx_lm.utils import load

    model, tokenizer = load(str(model_dir))
    inner = model.model

    def run(inputs: list[str]) -> None:
        tokens = [tokenizer.encode(t) for t in inputs]
        width = max(len(t) for t in tokens)
        states = inner(mx.array([t + [0] * (width - len(t)) for t in tokens])).astype(mx.float32)
        rows = mx.stack([states[i, len(t) - 1] for i, t in enumerate(tokens)])
        mx.eval(rows / mx.linalg.norm(rows, axis=-1, keepdims=True))

    run(texts(batch, 10**6))  # warm up
    started = time.perf_counter()
    for offset in range(0, total, batch):
        run(texts(batch, offset))
    rate = total / (time.perf_counter() - started)
    step = mx.array([[5] * PREFILL_STEP])
    mx.eval(inner(step))
    started = time.perf_counter()
    for _ in range(5):
        mx.eval(inner(step))
    return rate, (time.perf_counter() - started) / 5


def mlxd_rate(client: httpx.Client, batch: int, total: int) -> float:
    """inputs/s through ``/v1/embeddings``."""
    client.post("/v1/embeddings", json={"input": texts(batch, 10**6)}).raise_for_status()
    started = time.perf_counter()
    for offset in range(0, total, batch):
        reply = client.post("/v1/embeddings", json={"input": texts(batch, offset)})
        reply.raise_for_status()
    return total / (time.perf_counter() - started)


def stream_gaps(client: httpx.Client, tokens: int) -> list[float]:
    """Seconds between the chunks of one greedy stream."""
    body = {"prompt": "Once upon a time", "max_tokens": tokens, "stream": True, "temperature": 0}
    arrivals: list[float] = []
    with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(arrivals[1:])]  # the first gap is the TTFT


def with_bursts(url: str, client: httpx.Client, tokens: int) -> tuple[list[float], int]:
    """The stream's gaps while 256-input bursts run one after another beside it."""
    done = threading.Event()
    bursts = [0]

    def burst() -> None:
        with httpx.Client(base_url=url, timeout=300) as other:
            while not done.is_set():
                other.post("/v1/embeddings", json={"input": texts(256, 7 * bursts[0])}).raise_for_status()
                bursts[0] += 1

    thread = threading.Thread(target=burst)
    thread.start()
    time.sleep(0.05)
    try:
        gaps = stream_gaps(client, tokens)
    finally:
        done.set()
        thread.join()
    return gaps, bursts[0]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.1f} / {_p(values, 0.99) * 1e3:.1f} / {max(values) * 1e3:.1f}"


def main(argv: list[str] | None = None) -> None:
    """Run both measurements and print the tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.embeddings", description=__doc__)
    parser.add_argument("--total", type=int, default=512, help="inputs per throughput measurement")
    parser.add_argument("--tokens", type=int, default=300, help="tokens of the stream (default 300)")
    args = parser.parse_args(argv)
    from mlxd.runtime.demo_model import build_embedding_model

    with tempfile.TemporaryDirectory() as tmp:
        model = build_embedding_model(Path(tmp) / "embed", **SIZES)
        config = f"""
[server]
port = {{port}}
stream_interval = 0

[runtime]
keep_alive = "forever"
prefill_step_size = {PREFILL_STEP}

[models.bench]
model = "{model}"
default = true
"""
        server = start_mlxd_with(config, Path(tmp) / "mlxd")
        rows: list[tuple[int, float, float]] = []
        try:
            server.wait_healthy()
            with httpx.Client(base_url=server.url, timeout=300) as client:
                for batch in BATCHES:
                    total = max(batch, args.total if batch > 1 else args.total // 4)
                    rows.append((batch, mlxd_rate(client, batch, total), 0.0))
                stream_gaps(client, 16)  # warm up
                alone = stream_gaps(client, args.tokens)
                beside, bursts = with_bursts(server.url, client, args.tokens)
        finally:
            server.stop()
        raw: dict[int, Any] = {}
        step = 0.0
        for batch, _, _ in rows:
            total = max(batch, args.total if batch > 1 else args.total // 4)
            raw[batch], step = raw_rate(model, batch, total)
    print("Embeddings throughput (inputs/s), qwen3 hidden 128 x 4 layers, 8-40 word inputs\n")
    print("| batch | mlxd | raw engine | mlxd / raw |")
    print("|---|---|---|---|")
    for batch, rate, _ in rows:
        print(f"| {batch} | {rate:.0f} | {raw[batch]:.0f} | {rate / raw[batch]:.2f}× |")
    print(f"\nOne stream's gap between chunks (ms, p50 / p99 / max), {args.tokens} tokens:\n")
    print("| | gaps | p99 / alone |")
    print("|---|---|---|")
    print(f"| alone | {_ms(alone)} | 1.00× |")
    print(
        f"| beside {bursts} bursts of 256 inputs | {_ms(beside)} | {_p(beside, 0.99) / _p(alone, 0.99):.2f}× |"
    )
    print(f"\nOne prefill step ({PREFILL_STEP} tokens) in the raw engine: {step * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
