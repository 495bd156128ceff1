"""``python -m bench.embed_probe [--shape S]``: where an embedding request's time goes, in-process.

Diagnostics behind the embeddings rows of the GPU section, printed as plain lines. For the
decoder and the encoder of ``bench.embeddings`` (``--shape real`` on an accelerator):

- tokenizing one request's inputs, as admission does;
- one request of 1, 32 and 256 inputs (8 to 40 words, fresh each time) through the model's own
  forward pass in one batch (the benchmark's raw engine, tokens given), and through mlxd's
  ``Embedder`` as the worker runs it with nothing decoding (batches sized by the idle
  ``Pacer``: 8,192 padded tokens, more where the model runs them fast; shortest inputs first): per request p50 / max, and the
  batch shapes mlxd ran; the gap between the two is mlxd's worker-side cost, and what the
  benchmark's reply time adds beyond it is HTTP, admission and the reply;
- the first call of a new batch shape against the second (kernel plans or compilation an
  accelerator builds per shape).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bench.embeddings import SHAPES, encoder_available, texts
from mlxd.runtime.mlx.pacing import Pacer
from mlxd.runtime.prompts import encode_inputs

REQUESTS = 8


def _ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1e3:.1f} ms, max {max(values) * 1e3:.1f} ms"


def _raw(states: Any, pooling: str) -> Any:
    """The benchmark's raw engine on given tokens: one padded batch, pooled, normalized."""
    import mlx.core as mx

    from mlxd.runtime.mlx.embed import _pool

    def run(rows: list[list[int]]) -> Any:
        states_ = states(rows)
        vectors = _pool(states_, mx.array([len(r) for r in rows]), pooling)
        vectors = vectors / mx.linalg.norm(vectors, axis=-1, keepdims=True)
        mx.eval(vectors)
        return vectors

    return run


class _Recorded:
    """A forward pass that notes the shape of each batch it runs."""

    def __init__(self, forward: Any) -> None:
        self._forward = forward
        self.chunked = forward.chunked
        self.open, self.chunk = forward.open, forward.chunk
        self.shapes: list[tuple[int, int]] = []

    def states(self, rows: list[list[int]]) -> Any:
        self.shapes.append((len(rows), max(len(r) for r in rows)))
        return self._forward.states(rows)

    def layered(self, rows: list[list[int]]) -> Any:
        return [], self.states(rows)


def _through_embedder(forward: _Recorded, pooling: str, budget: int | None = None) -> Any:
    """mlxd's ``Embedder`` run as the idle worker runs it: batches sized by its ``Pacer``, or
    of ``budget`` tokens."""
    from mlxd.runtime.mlx.commands import Embed
    from mlxd.runtime.mlx.embed import Embedder

    embedder, pacer = Embedder(forward), Pacer()  # type: ignore[arg-type]

    def run(rows: list[list[int]]) -> Any:
        future: Future[Any] = Future()
        embedder.add(Embed(key=None, tokens=rows, pooling=pooling, normalize=True, future=future))  # type: ignore[arg-type]
        while embedder:
            started = time.perf_counter()
            ran = embedder.step(budget or pacer.budget(False, None, 0))
            pacer.idle(ran, time.perf_counter() - started)
        return future.result()

    return run


def requests(name: str, tokenizer: Any, forward: Any, pooling: str, batches: list[int]) -> None:
    """Tokenizing, then raw against mlxd's Embedder, per request of each of ``batches`` inputs."""
    for batch in batches:
        inputs = [texts(batch, 10_000 * (n + 1)) for n in range(REQUESTS)]
        started = time.perf_counter()
        tokens = [encode_inputs(tokenizer, request) for request in inputs]
        tokenizing = (time.perf_counter() - started) / REQUESTS
        recorded = _Recorded(forward)
        runs = {
            "raw": _raw(forward.states, pooling),
            "embedder": _through_embedder(recorded, pooling),
            "one batch": _through_embedder(_Recorded(forward), pooling, 1 << 30),
        }
        times: dict[str, list[float]] = {k: [] for k in runs}
        runs["raw"](tokens[0][:1])
        for request in tokens:  # taking turns, each request's shapes new to neither first
            for key, run in runs.items():
                started = time.perf_counter()
                run(request)
                times[key].append(time.perf_counter() - started)
        print(f"{name}, {batch} inputs a request: tokenizing {tokenizing * 1e3:.1f} ms")
        for key, values in times.items():
            print(f"  {key:9s} {_ms(values)}; per request: {', '.join(f'{v * 1e3:.1f}' for v in values)}")
        per_request = len(recorded.shapes) // REQUESTS
        print(f"  embedder batches (rows x width), first two requests: {recorded.shapes[: per_request * 2]}")


def new_shapes(name: str, forward: Any) -> None:
    """First call of a batch shape against the second, for shapes a burst might bring."""
    import mlx.core as mx

    for rows, width in ((1, 23), (1, 37), (32, 41), (32, 47), (100, 43), (170, 29), (256, 53)):
        tokens = [[7] * width] * rows
        calls = []
        for _ in range(2):
            started = time.perf_counter()
            mx.eval(forward.states(tokens))
            calls.append(time.perf_counter() - started)
        print(f"{name}, {rows} x {width}: first {calls[0] * 1e3:.1f} ms, second {calls[1] * 1e3:.1f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.embed_probe", description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--batches", default="1,32,256", help="inputs a request, comma-separated")
    args = parser.parse_args(argv)
    sizes, encoder_sizes = SHAPES[args.shape]

    from mlx_lm.utils import load

    from mlxd.runtime.demo_embedders import build_embedding_model, build_encoder_model
    from mlxd.runtime.mlx.embed import DecoderForward

    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = load(str(build_embedding_model(Path(tmp) / "embed", **sizes)))
        models = [("decoder", tokenizer, DecoderForward(model), "last")]
        if encoder_available():
            import json

            from mlxd.runtime.mlx.encoder import load_encoder

            path = build_encoder_model(Path(tmp) / "bert", **encoder_sizes)
            config = json.loads((path / "config.json").read_text())
            _, encoder_tokenizer, encoder = load_encoder(path, config, "bert")
            models.append(("encoder", encoder_tokenizer, encoder, "mean"))
        for name, _, forward, _ in models:
            new_shapes(name, forward)
        for name, tok, forward, pooling in models:
            requests(name, tok, forward, pooling, [int(b) for b in args.batches.split(",")])


if __name__ == "__main__":
    main()
