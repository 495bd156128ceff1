"""The worker's embedder on real MLX: bounded batches, long inputs in chunks through a KV
cache, and every pooling equal whichever way the inputs were grouped."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.mlx


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Any:
    from mlx_lm.utils import load_model

    loaded, _ = load_model(tiny_model_dir, lazy=False)
    return loaded


def _run(
    model: Any, inputs: list[list[int]], pooling: str, budget: int, normalize: bool = True
) -> np.ndarray:
    from mlxd.runtime.mlx.commands import Embed
    from mlxd.runtime.mlx.embed import DecoderForward, Embedder

    embedder = Embedder(DecoderForward(model))
    future: Future[Any] = Future()
    embedder.add(Embed(("m", None, None), inputs, pooling, normalize, future))  # type: ignore[arg-type]
    steps = 0
    while embedder:
        embedder.step(budget)
        steps += 1
    assert future.done()
    result: np.ndarray = future.result()
    result.setflags(write=False)
    _run.steps = steps  # type: ignore[attr-defined]
    return result


INPUTS = [[(7 * i + j) % 200 + 5 for j in range(3 + 5 * i)] for i in range(8)]  # 3 to 38 tokens


@pytest.mark.parametrize("pooling", ["last", "mean", "cls"])
def test_batches_and_chunks_give_the_vectors_of_one_at_a_time(model: Any, pooling: str) -> None:
    whole = _run(model, INPUTS, pooling, budget=4096)
    assert _run.steps == 1  # type: ignore[attr-defined]  # everything in one batch
    bounded = _run(model, INPUTS, pooling, budget=16)  # the long ones in chunks, the short ones in batches
    assert _run.steps > len(INPUTS)  # type: ignore[attr-defined]
    alone = np.stack([_run(model, [tokens], pooling, budget=4096)[0] for tokens in INPUTS])
    assert whole.shape == (len(INPUTS), 64)
    assert np.allclose(whole, alone, atol=1e-5)
    assert np.allclose(bounded, alone, atol=1e-5)
    assert np.allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)


def test_poolings_differ_and_normalize_is_optional(model: Any) -> None:
    last = _run(model, INPUTS[3:5], "last", 4096, normalize=False)
    mean = _run(model, INPUTS[3:5], "mean", 4096, normalize=False)
    assert not np.allclose(last, mean, atol=1e-3)
    assert not np.allclose(np.linalg.norm(last, axis=1), 1.0, atol=1e-3)


def test_read_pooling_follows_the_sentence_transformers_files(tmp_path: Path) -> None:
    import json

    from mlxd.runtime.pooling import PoolingSpec, read_pooling

    assert read_pooling(tmp_path) == PoolingSpec("last", True, declared=False)
    modules = [
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    assert read_pooling(tmp_path) == PoolingSpec("cls", False, declared=True)
    modules.append({"idx": 2, "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    assert read_pooling(tmp_path) == PoolingSpec("mean", True, declared=True)
    modules[1]["path"] = "../outside"
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert read_pooling(tmp_path).pooling == "last"  # a path out of the directory is never read


def test_a_batch_takes_inputs_of_like_length_and_answers_in_the_request_order(model: Any) -> None:
    from mlxd.runtime.mlx.commands import Embed
    from mlxd.runtime.mlx.embed import DecoderForward, Embedder

    mixed = [INPUTS[7], INPUTS[0], INPUTS[6], INPUTS[1]]  # 38, 3, 33 and 8 tokens
    embedder = Embedder(DecoderForward(model))
    future: Future[Any] = Future()
    embedder.add(Embed(("m", None, None), mixed, "mean", True, future))  # type: ignore[arg-type]
    padded = []
    while embedder:
        padded.append(embedder.step(80))
    # [3, 8] then [33, 38]: 2 x 8 + 2 x 38 tokens; in the given order it would be 2 x 38 + 2 x 33
    assert padded == [16, 76]
    alone = np.stack([_run(model, [tokens], "mean", budget=4096)[0] for tokens in mixed])
    assert np.allclose(future.result(), alone, atol=1e-5)


def test_a_round_sorts_the_inputs_of_every_queued_request_and_later_ones_wait(model: Any) -> None:
    from mlxd.runtime.mlx.commands import Embed
    from mlxd.runtime.mlx.embed import DecoderForward, Embedder

    embedder = Embedder(DecoderForward(model))
    futures: list[Future[Any]] = [Future() for _ in range(3)]
    requests = [[INPUTS[7], INPUTS[0]], [INPUTS[6], INPUTS[1]], [INPUTS[0]]]  # 38 + 3, 33 + 8, then 3
    for inputs, future in zip(requests[:2], futures, strict=False):
        embedder.add(Embed(("m", None, None), inputs, "mean", True, future))  # type: ignore[arg-type]
    padded = [embedder.step(80)]
    embedder.add(Embed(("m", None, None), requests[2], "mean", True, futures[2]))  # type: ignore[arg-type]
    while embedder:
        padded.append(embedder.step(80))
    # Both requests' inputs in one round: [3, 8] then [33, 38] (each request on its own would
    # pad its 3 to 38 and its 8 to 33: 76 + 66). The third request came during the round and
    # runs after it, though shorter than what was left.
    assert padded == [16, 76, 3]
    for inputs, future in zip(requests, futures, strict=True):
        alone = np.stack([_run(model, [tokens], "mean", budget=4096)[0] for tokens in inputs])
        assert np.allclose(future.result(), alone, atol=1e-5)


def test_requests_that_pool_differently_share_a_batch(model: Any) -> None:
    from mlxd.runtime.mlx.commands import Embed
    from mlxd.runtime.mlx.embed import DecoderForward, Embedder

    embedder = Embedder(DecoderForward(model))
    futures: dict[str, Future[Any]] = {pooling: Future() for pooling in ("last", "mean", "cls")}
    for pooling, future in futures.items():
        embedder.add(Embed(("m", None, None), INPUTS[2:5], pooling, False, future))  # type: ignore[arg-type]
    embedder.step(4096)
    assert not embedder  # one batch ran all three requests
    for pooling, future in futures.items():
        alone = [_run(model, [tokens], pooling, 8, normalize=False)[0] for tokens in INPUTS[2:5]]  # in chunks
        assert np.allclose(future.result(), np.stack(alone), atol=1e-5)


def test_a_failed_batch_fails_every_request_in_it_and_the_next_ones_still_run() -> None:
    from mlxd.errors import GenerationError
    from mlxd.runtime.mlx.commands import Embed
    from mlxd.runtime.mlx.embed import Embedder

    class Broken:
        chunked = True

        def states(self, rows: list[list[int]]) -> Any:
            if any(7 in row for row in rows):
                raise RuntimeError("out of memory")
            import mlx.core as mx

            return mx.ones((len(rows), max(map(len, rows)), 4))

    embedder = Embedder(Broken())  # type: ignore[arg-type]
    futures: list[Future[Any]] = [Future() for _ in range(3)]
    embedder.add(Embed(("m", None, None), [[1, 2], [7]], "mean", True, futures[0]))  # type: ignore[arg-type]
    embedder.add(Embed(("m", None, None), [[3]], "mean", True, futures[1]))  # type: ignore[arg-type]
    embedder.step(4096)  # one batch holds both requests' inputs, and fails
    embedder.add(Embed(("m", None, None), [[4, 5]], "last", False, futures[2]))  # type: ignore[arg-type]
    while embedder:
        embedder.step(4096)
    for future in futures[:2]:
        with pytest.raises(GenerationError, match="embedding failed: out of memory"):
            future.result(timeout=0)
    assert futures[2].result(timeout=0).tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_a_large_budget_never_holds_a_wider_attention_than_one_widest_input() -> None:
    """An idle batch on a fast accelerator may hold 32,768 tokens, but never more attention
    scores (rows x width x width) than one input of ``WIDEST`` tokens, and a longer input
    still runs in chunks."""
    import mlx.core as mx

    from mlxd.runtime.mlx.commands import Embed
    from mlxd.runtime.mlx.embed import WIDEST, Embedder

    class Shapes:
        chunked = True

        def __init__(self) -> None:
            self.batches: list[tuple[int, int]] = []
            self.chunks: list[int] = []

        def states(self, rows: list[list[int]]) -> Any:
            self.batches.append((len(rows), max(map(len, rows))))
            return mx.ones((len(rows), max(map(len, rows)), 4))

        def open(self) -> list[Any]:
            return []

        def chunk(self, tokens: list[int], cache: list[Any]) -> Any:
            self.chunks.append(len(tokens))
            return mx.ones((len(tokens), 4))

    forward = Shapes()
    embedder = Embedder(forward)  # type: ignore[arg-type]
    future: Future[Any] = Future()
    inputs = [[5] * 10_000] + [[6] * 4096] * 6 + [[7] * 100] * 300
    embedder.add(Embed(("m", None, None), inputs, "mean", True, future))  # type: ignore[arg-type]
    while embedder:
        embedder.step(32768)
    assert WIDEST == 8192
    assert forward.batches == [(300, 100), (4, 4096), (2, 4096)]  # 4 x 4096^2 = 8192^2
    assert forward.chunks == [8192, 1808]
    assert future.result().shape == (len(inputs), 4)
