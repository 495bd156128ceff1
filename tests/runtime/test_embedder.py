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
