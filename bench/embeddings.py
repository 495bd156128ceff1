"""Embeddings: throughput against the raw engine, and what a burst does to open streams.

``python -m bench.embeddings [--total N] [--tokens T] [--reps R] [--streams S] [--format F]
[--shape S] [--profile FILE]`` builds a decoder embedding model (qwen3, hidden 128, 4
layers by default; sentence-transformers files: last-token pooling, normalized) and, when
mlx-embeddings is installed (``mlxd[embeddings]``), a BERT encoder of the same size (mean
pooling, normalized); serves both with ``mlxd serve`` (under the sampling profiler with
``--profile``) and measures, in one run:

1. inputs/s at batch 1, 32 and 256 (one request of that many inputs at a time, vectors
   through ``/v1/embeddings`` as JSON numbers, or as base64 with ``--format base64``) against
   the raw engine: the same inputs tokenized as mlxd tokenizes them (``encode_inputs``: one
   batch call of the Rust tokenizer) and run through the model's own forward pass
   in-process (mlx-lm's model for the decoder: right-padded batch, last-token pooling;
   mlx-embeddings' for the encoder: masked batch, its own mean pooling; normalized,
   evaluated), in batches of the
   same size, the two taking turns ``R`` times (the ratio is the median of the paired
   ratios); and where a request's time goes: until its reply arrived, then the client's
   decoding, beside the round trip of ``GET /health`` (HTTP's own share);
   then the same under load (``--clients C``, default 4; ``bench.embed_load``): C client
   processes each sending such requests one after another, all at once, against the raw
   engine at the same batch size, with the inputs per batch mlxd ran (``/mlxd/status``);
2. the largest difference between a batch's vectors and the same inputs' vectors one at a
   time (32 inputs of 8 to 40 words);
3. the gap between the tokens of one stream (``stream_interval = 0`` and ``logprobs``: a
   chunk per token) alone, and while bursts of 256 embedding inputs run beside it, for the
   stream's own model and for the encoder, ``--streams`` times each (default 3; one
   stream's p99 is its second-longest gap of a few hundred): p50 / p99 / max over them all
   and each stream's p99, the embedding batches that ran per token of the stream, next to
   the time one prefill step (``prefill_step_size`` tokens) takes in the raw engine; each
   stream's longest gaps, and this client's own garbage collections;
4. the same stream decoded in this process by mlx-lm and by mlxd's solo decoder
   (``bench.probe.decode_stalls``), without HTTP.

It prints Markdown for ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.gc_pauses import GcPauses
from bench.probe import decode_stalls
from bench.servers import start_mlxd_with
from mlxd.runtime.prompts import encode_inputs

#: Model shapes by ``--shape``: (decoder, encoder) sizes and how the report names them. ``tiny``
#: suits this project's 2-core CPU; ``real`` has the width and depth of Qwen3-Embedding-0.6B's
#: decoder and bge-base's encoder (random float32 weights; head size hidden / heads, 64 where
#: Qwen3's is 128), for an accelerator.
SHAPES = {
    "tiny": (
        {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256},
        {"hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 256},
    ),
    "real": (
        {
            "hidden_size": 1024,
            "num_layers": 28,
            "num_heads": 16,
            "num_kv_heads": 8,
            "intermediate_size": 3072,
        },
        {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072},
    ),
}
PREFILL_STEP = 256
BATCHES = (1, 32, 256)


def texts(count: int, offset: int = 0) -> list[str]:
    """Inputs of 8 to 40 words, different each time."""
    return [
        f"document {offset + i} says " + "words and more words " * (2 + (offset + i) % 8)
        for i in range(count)
    ]


Embedder = Callable[[list[str]], object]
#: (seconds until a reply arrived, seconds decoding it) per request.
Split = list[tuple[float, float]]


def raw_decoder(model_dir: Path) -> tuple[Embedder, float, tuple[Any, Any]]:
    """mlx-lm's model in-process: right-padded batch, last-token pooling, normalized,
    evaluated; the seconds one prefill step (``PREFILL_STEP`` tokens) takes; and the loaded
    model and tokenizer."""
    import mlx.core as mx
    from mlx_lm.utils import load

    model, tokenizer = load(str(model_dir))
    inner = model.model

    def run(inputs: list[str]) -> object:
        tokens = encode_inputs(tokenizer, inputs)  # as mlxd does: one batch call where it can
        width = max(len(t) for t in tokens)
        states = inner(mx.array([t + [0] * (width - len(t)) for t in tokens])).astype(mx.float32)
        rows = mx.stack([states[i, len(t) - 1] for i, t in enumerate(tokens)])
        rows = rows / mx.linalg.norm(rows, axis=-1, keepdims=True)
        mx.eval(rows)
        return rows

    step = mx.array([[5] * PREFILL_STEP])
    mx.eval(inner(step))
    started = time.perf_counter()
    for _ in range(5):
        mx.eval(inner(step))
    return run, (time.perf_counter() - started) / 5, (model, tokenizer)


def raw_encoder(model_dir: Path) -> Embedder:
    """mlx-embeddings' model in-process: masked batch, its own mean pooling, normalized."""
    import mlx.core as mx
    from mlx_embeddings.utils import load

    model, tokenizer = load(str(model_dir))

    def run(inputs: list[str]) -> object:
        tokens = encode_inputs(tokenizer, inputs)
        width = max(len(t) for t in tokens)
        ids = mx.array([t + [0] * (width - len(t)) for t in tokens])
        mask = mx.array([[1.0] * len(t) + [0.0] * (width - len(t)) for t in tokens])
        vectors = model(ids, attention_mask=mask).text_embeds
        mx.eval(vectors)
        return vectors

    return run


def encoder_available() -> bool:
    """Whether mlx-embeddings loads here (its import needs mlx-vlm and part of that one's
    stack; where it does not, the decoder is measured alone)."""
    try:
        import mlx_embeddings.utils  # noqa: F401
    except Exception:
        return False
    return True


def _embed(
    client: httpx.Client, model: str, inputs: list[str], fmt: str = "float", split: Split | None = None
) -> list[Any]:
    """The vectors of ``inputs``: JSON numbers (``float``) or, as the official OpenAI SDK asks by
    default, ``base64`` decoded to float32 arrays. ``split`` gets the seconds until the reply
    had arrived and the seconds the client then spent decoding it."""
    import numpy as np

    started = time.perf_counter()
    reply = client.post("/v1/embeddings", json={"model": model, "input": inputs, "encoding_format": fmt})
    reply.raise_for_status()
    arrived = time.perf_counter()
    rows = [item["embedding"] for item in reply.json()["data"]]
    if fmt == "base64":
        rows = [np.frombuffer(base64.b64decode(row), dtype="<f4") for row in rows]
    if split is not None:
        split.append((arrived - started, time.perf_counter() - arrived))
    return rows


def rate(embed: Embedder, batch: int, total: int, offset: int) -> float:
    """inputs/s of ``embed`` over ``total`` fresh inputs, ``batch`` at a time (after one
    warm-up batch)."""
    embed(texts(batch, 10**6 + offset))
    started = time.perf_counter()
    for start in range(0, total, batch):
        embed(texts(batch, offset + start))
    return total / (time.perf_counter() - started)


def batch_difference(client: httpx.Client, model: str, count: int = 32) -> float:
    """The largest difference between batched vectors and one-at-a-time ones."""
    import numpy as np

    inputs = texts(count, 5000)
    batched = np.array(_embed(client, model, inputs))
    alone = np.array([_embed(client, model, [text])[0] for text in inputs])
    return float(np.abs(batched - alone).max())


STREAM_PROMPT = "Once upon a time"


@dataclass
class Stream:
    """When each token of one greedy stream arrived, and the collections this process ran
    meanwhile (a client's own pause reads as the daemon's gap).

    The stream asks for ``logprobs``, so every token comes in a chunk of its own, its text
    empty while it holds part of a character: without them a chunk carries every token
    since the last whole character, and a random-weight model's runs of byte tokens read as
    stalls of many steps (on the accelerator, 20-60 ms gaps after the same tokens in every
    run, alone and beside bursts alike)."""

    #: (arrival, tokens in the chunk) of each chunk that carried tokens.
    chunks: list[tuple[float, int]]
    collector: GcPauses

    @property
    def gaps(self) -> list[float]:
        """Seconds between tokens, from the first (after the TTFT) on; a chunk of several
        tokens (none expected with ``logprobs``) spreads its gap over them."""
        out: list[float] = []
        for (before, _), (at, count) in itertools.pairwise(self.chunks):
            out += [(at - before) / count] * count
        return out

    @property
    def shared(self) -> int:
        """Chunks that carried more than one token."""
        return sum(1 for _, count in self.chunks if count > 1)

    def longest(self, count: int = 5) -> str:
        """The ``count`` longest gaps in ms, each with the token it ended (the first token is
        1), the client's own collection pause inside it, if any, and this client's
        collections over the stream."""
        gaps = self.gaps
        ends = [at for at, n in self.chunks[1:] for _ in range(n)]
        ranked = sorted(range(len(gaps)), key=gaps.__getitem__, reverse=True)[:count]
        parts = []
        for i in sorted(ranked):
            start, end = ends[i] - gaps[i], ends[i]
            inside = sum(p.seconds for p in self.collector.pauses if start < p.ended <= end)
            note = f" (client GC {inside * 1e3:.1f})" if inside > 0.001 else ""
            parts.append(f"{gaps[i] * 1e3:.1f} @ {i + 2}{note}")
        return (
            ", ".join(parts)
            + f"; client: {self.collector.summary()}; chunks of several tokens: {self.shared}"
        )


def stream_gaps(client: httpx.Client, tokens: int) -> Stream:
    """One greedy stream's token arrivals."""
    body = {
        "model": "decoder",
        "prompt": STREAM_PROMPT,
        "max_tokens": tokens,
        "stream": True,
        "temperature": 0,
        "logprobs": 0,
    }
    chunks: list[tuple[float, int]] = []
    with GcPauses() as collector, client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                now = time.perf_counter()
                choice = json.loads(line[6:])["choices"]
                count = len((choice[0].get("logprobs") or {}).get("tokens") or []) if choice else 0
                if count:
                    chunks.append((now, count))
    return Stream(chunks, collector)


@dataclass
class Beside:
    """Streams beside bursts of 256 inputs to one model: how many bursts they took, and how
    many embedding batches ran from each stream's request to its last token."""

    streams: list[Stream]
    bursts: int
    batches: int


def beside_bursts(url: str, client: httpx.Client, tokens: int, model: str, count: int) -> Beside:
    """``count`` streams, each while 256-input bursts for ``model`` run beside it."""
    streams, bursts, batches = [], 0, 0
    for _ in range(count):
        stream, burst, ran = with_bursts(url, client, tokens, model)
        streams.append(stream)
        bursts += burst
        batches += ran
    return Beside(streams, bursts, batches)


def with_bursts(url: str, client: httpx.Client, tokens: int, model: str) -> tuple[Stream, int, int]:
    """The stream's gaps while 256-input bursts for ``model`` run one after another beside
    it, the bursts sent, and the embedding batches run during the stream."""
    done = threading.Event()
    bursts = [0]

    def burst() -> None:
        with httpx.Client(base_url=url, timeout=300) as other:
            while not done.is_set():
                body = {"model": model, "input": texts(256, 7 * bursts[0])}
                other.post("/v1/embeddings", json=body).raise_for_status()
                bursts[0] += 1

    thread = threading.Thread(target=burst)
    thread.start()
    time.sleep(0.05)
    try:
        before = client.get("/mlxd/status").json()["embedding_batches"]
        stream = stream_gaps(client, tokens)
        batches = client.get("/mlxd/status").json()["embedding_batches"] - before
    finally:
        done.set()
        thread.join()
    return stream, bursts[0], batches


def http_floor(client: httpx.Client, count: int = 200) -> float:
    """The median round trip of ``GET /health``: what HTTP alone costs this client a request."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        client.get("/health").raise_for_status()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def under_load(
    url: str,
    client: httpx.Client,
    args: argparse.Namespace,
    raws: dict[str, Embedder],
    busy: dict[str, dict[int, list[tuple[float, float, float]]]],
) -> None:
    """Each model and batch size, ``args.reps`` times: ``args.clients`` processes sending
    requests at once, then the raw engine on as many inputs at that batch size; into
    ``busy``: (mlxd's inputs/s, the raw engine's, inputs per batch mlxd ran)."""
    from bench.embed_load import EmbedClients

    clients = EmbedClients(url, args.clients, args.format)
    try:
        for rep in range(args.reps):
            for alias, runs in busy.items():
                for batch, found in runs.items():
                    total = max(batch, args.total if batch > 1 else args.total // 4)
                    each = max(1, total // batch // args.clients)
                    inputs = each * batch * args.clients
                    offset = 2 * 10**6 + rep * inputs
                    clients.prepare(alias, batch, each, offset)
                    before = client.get("/mlxd/status").json()
                    seconds = clients.go()
                    after = client.get("/mlxd/status").json()
                    merged = (after["embedded_inputs"] - before["embedded_inputs"]) / max(
                        1, after["embedding_batches"] - before["embedding_batches"]
                    )
                    floor = rate(raws[alias], batch, inputs, offset)
                    found.append((inputs / seconds, floor, merged))
    finally:
        clients.close()


def _rate_cells(runs: Sequence[tuple[float, ...]]) -> str:
    """mlxd's and the raw engine's inputs/s (medians) and their paired median ratio, as cells."""
    served = statistics.median(r[0] for r in runs)
    floor = statistics.median(r[1] for r in runs)
    ratio = statistics.median(r[0] / r[1] for r in runs)
    return f"{served:.0f} | {floor:.0f} | {ratio:.2f}×"


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
    parser.add_argument("--reps", type=int, default=3, help="paired repetitions of each rate (default 3)")
    parser.add_argument(
        "--streams", type=int, default=3, help="streams alone and beside each model's bursts (default 3)"
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="client processes under load (default 4; 1 skips it)"
    )
    parser.add_argument(
        "--format",
        choices=("float", "base64"),
        default="float",
        help="encoding_format of the throughput requests (default float; the OpenAI SDK sends base64)",
    )
    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="tiny",
        help="model sizes: tiny (default) or real (accelerators)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="run mlxd under the sampling profiler (bench.profiled), its folded stacks into this file",
    )
    args = parser.parse_args(argv)
    sizes, encoder_sizes = SHAPES[args.shape]
    # The stream's reader and the burst's sender share this process: with Python's 5 ms
    # switch interval the reader could wait up to 5 ms for the GIL behind the sender, which
    # would count as the daemon's gap (real clients are processes of their own).
    sys.setswitchinterval(0.0005)
    from mlxd.runtime.demo_embedders import build_embedding_model, build_encoder_model

    encoder = encoder_available()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_embedding_model(Path(tmp) / "embed", **sizes)
        models = {"decoder": model}
        if encoder:
            models["encoder"] = build_encoder_model(Path(tmp) / "bert", **encoder_sizes)
        aliases = "".join(f'\n[models.{alias}]\nmodel = "{path}"\n' for alias, path in models.items())
        config = f"""
[server]
port = {{port}}
stream_interval = 0

[runtime]
keep_alive = "forever"
prefill_step_size = {PREFILL_STEP}
{aliases}"""
        server = start_mlxd_with(config, Path(tmp) / "mlxd", profile=args.profile and args.profile.resolve())
        rates: dict[str, dict[int, list[tuple[float, float]]]] = {a: {b: [] for b in BATCHES} for a in models}
        splits: dict[str, dict[int, Split]] = {a: {b: [] for b in BATCHES} for a in models}
        busy: dict[str, dict[int, list[tuple[float, float, float]]]] = {
            a: {b: [] for b in BATCHES} for a in models
        }
        differences: dict[str, float] = {}
        beside: dict[str, Beside] = {}
        raw_decoder_run, step, loaded = raw_decoder(model)
        raws = {"decoder": raw_decoder_run}
        if encoder:
            raws["encoder"] = raw_encoder(models["encoder"])
        try:
            server.wait_healthy()
            with httpx.Client(base_url=server.url, timeout=300) as client:
                # mlxd and the raw engine take turns on the same batches (the server idles
                # meanwhile), so a shared machine's load drifts little within a pair.
                for rep in range(args.reps):
                    for alias in models:
                        for batch in BATCHES:
                            total = max(batch, args.total if batch > 1 else args.total // 4)
                            served = rate(
                                lambda xs, a=alias, b=batch: _embed(client, a, xs, args.format, splits[a][b]),
                                batch,
                                total,
                                rep * total,
                            )
                            del splits[alias][batch][-total // batch - 1]  # the warm-up's
                            floor = rate(raws[alias], batch, total, rep * total)
                            rates[alias][batch].append((served, floor))
                health = http_floor(client)
                if args.clients > 1:
                    under_load(server.url, client, args, raws, busy)
                for alias in models:
                    differences[alias] = batch_difference(client, alias)
                stream_gaps(client, 16)  # warm up
                alone = [stream_gaps(client, args.tokens) for _ in range(args.streams)]
                for alias in models:
                    beside[alias] = beside_bursts(server.url, client, args.tokens, alias, args.streams)
        finally:
            server.stop()
        print("The same stream in this process, without HTTP:\n", flush=True)
        decode_stalls(*loaded, loaded[1].encode(STREAM_PROMPT), args.tokens)
        print()
    names = {
        "decoder": f"decoder (qwen3, hidden {sizes['hidden_size']} x {sizes['num_layers']} layers, last token)",
        "encoder": f"encoder (bert through mlx-embeddings, hidden {encoder_sizes['hidden_size']} x "
        f"{encoder_sizes['num_layers']} layers, mean)",
    }
    print(
        f"Embeddings throughput (inputs/s, medians of {args.reps} paired repetitions), 8-40 word inputs, "
        f"`encoding_format` {args.format}\n"
    )
    print("| model | batch | mlxd | raw engine | mlxd / raw (paired median) |")
    print("|---|---|---|---|---|")
    for alias in models:
        for batch in BATCHES:
            print(f"| {names[alias]} | {batch} | {_rate_cells(rates[alias][batch])} |")
    if args.clients > 1:
        print(
            f"\nUnder load: {args.clients} client processes at once, each sending requests of that many "
            "inputs one after another (inputs/s, medians; inputs per batch: what mlxd merged):\n"
        )
        print("| model | batch | mlxd | raw engine | mlxd / raw (paired median) | inputs per batch |")
        print("|---|---|---|---|---|---|")
        for alias in models:
            for batch in BATCHES:
                runs = busy[alias][batch]
                merged = statistics.median(r[2] for r in runs)
                print(f"| {names[alias]} | {batch} | {_rate_cells(runs)} | {merged:.1f} |")
    print(
        "\nWhere one request's time goes (ms, medians): until its reply had arrived (HTTP, tokenizing, "
        "the model, encoding the reply), then the client decoding it; beside, the raw engine's time "
        f"for the same batch. HTTP alone (`GET /health`, the same client): {health * 1e3:.2f} ms.\n"
    )
    print("| model | batch | reply arrived | client decoding | raw engine |")
    print("|---|---|---|---|---|")
    for alias in models:
        for batch in BATCHES:
            arrived = statistics.median(split[0] for split in splits[alias][batch]) * 1e3
            decoding = statistics.median(split[1] for split in splits[alias][batch]) * 1e3
            floor = batch / statistics.median(p[1] for p in rates[alias][batch]) * 1e3
            print(f"| {names[alias]} | {batch} | {arrived:.1f} | {decoding:.1f} | {floor:.1f} |")
    print("\nBatched against one at a time (32 inputs), largest difference of any value:\n")
    print("| model | max abs difference |")
    print("|---|---|")
    for alias in models:
        print(f"| {names[alias]} | {differences[alias]:.1e} |")
    alone_gaps = [gap for stream in alone for gap in stream.gaps]
    print(
        f"\nOne decoder stream's gap between tokens (ms, p50 / p99 / max, over {args.streams} streams of "
        f"{args.tokens} tokens; each stream's own p99; embedding batches per token of the stream, from "
        "its request on, so a first batch run before it decoded counts too):\n"
    )
    print("| | gaps | p99 / alone | each stream's p99 | batches per token |")
    print("|---|---|---|---|---|")
    print(f"| alone | {_ms(alone_gaps)} | 1.00× | {_each_p99(alone)} | |")
    for alias, side in beside.items():
        gaps = [gap for stream in side.streams for gap in stream.gaps]
        ratio = _p(gaps, 0.99) / _p(alone_gaps, 0.99)
        per_token = side.batches / sum(len(stream.gaps) + 1 for stream in side.streams)
        print(
            f"| beside {side.bursts} bursts of 256 inputs to the {alias} | {_ms(gaps)} | {ratio:.2f}× "
            f"| {_each_p99(side.streams)} | {per_token:.2f} |"
        )
    print(f"\nOne prefill step ({PREFILL_STEP} tokens) in the raw engine: {step * 1e3:.1f} ms")
    print(
        "\nEach stream's longest gaps (ms @ the token each ended, the first token being 1), and this client's "
        "collections:\n"
    )
    labelled = [("alone", alone), *((f"beside the {a}", side.streams) for a, side in beside.items())]
    for label, streams in labelled:
        for index, stream in enumerate(streams, 1):
            print(f"- {label}, {index}: {stream.longest()}")


def _each_p99(streams: list[Stream]) -> str:
    return " / ".join(f"{_p(stream.gaps, 0.99) * 1e3:.1f}" for stream in streams)


if __name__ == "__main__":
    main()
