"""Load one rank's shard of a model with mlx-lm's ``sharded_load``, under mlxd's guards.

``tensor``: every rank holds a slice of every layer (``model.shard``); ``pipeline``: each
rank holds a run of whole layers (``model.model.pipeline``), for the families mlx-lm can
pipeline. What a single process refuses is refused here too: code in the model
directory, non-finite weights, and any download (``sharded_load`` would fetch a missing
path from the Hub; mlxd only ever hands it a directory that exists). Encoder embedding
models (mlx-embeddings' families) cannot be split at all: they are refused by name before
mlx-lm is asked to read them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm.utils import load_model, sharded_load

from mlxd.config.families import encoder_family
from mlxd.errors import ModelDirNotFoundError, ModelLoadError, ModelUnsupportedError
from mlxd.runtime.mlx.loading import LoadedModel, loaded_model, read_config
from mlxd.runtime.specs import ModelSpec

#: What a pipeline load reads to find each stage's files (``mlx_lm.convert`` writes it).
WEIGHT_INDEX = "model.safetensors.index.json"


def preflight(spec: ModelSpec, path: Path, size: int) -> None:
    """What this rank can check before any rank starts loading: the directory, the code
    guard, and whether the model's family can be split the alias's way."""
    name = spec.label or spec.source
    if spec.adapter_path is not None:
        raise ModelUnsupportedError(f"{name}: LoRA adapters are not served across several ranks")
    if not path.is_dir():
        raise ModelDirNotFoundError(f"model directory {name!r} does not exist on this host")
    config = read_config(path)
    if (encoder := encoder_family(config)) is not None:  # mlx-embeddings' model, not mlx-lm's
        raise ModelUnsupportedError(
            f"{name}: {encoder} encoder embedding models are not served across several ranks yet",
            hint="serve them from a daemon without [distributed]",
        )
    try:
        model, _ = load_model(path, lazy=True, strict=False, trust_remote_code=False)
    except Exception as exc:
        raise ModelLoadError(f"could not read {name}: {type(exc).__name__}: {exc}") from exc
    family = config.get("model_type", "this")
    if spec.parallel == "pipeline":
        if not (hasattr(model, "model") and hasattr(model.model, "pipeline")):
            raise ModelUnsupportedError(
                f"{name}: mlx-lm cannot split {family} models as a pipeline",
                hint='use parallel = "tensor" for this alias',
            )
        if len(model.model.layers) < size:
            raise ModelUnsupportedError(f"{name}: {len(model.model.layers)} layers cannot feed {size} stages")
        if not (path / WEIGHT_INDEX).is_file():
            raise ModelUnsupportedError(
                f"{name}: a pipeline load needs {WEIGHT_INDEX} (mlx_lm.convert writes it)"
            )
    elif not hasattr(model, "shard"):
        raise ModelUnsupportedError(
            f"{name}: mlx-lm cannot split {family} models over several ranks (tensor parallel)",
            hint='try parallel = "pipeline" if the family supports it',
        )


def load_sharded(spec: ModelSpec, path: Path, group: Any) -> LoadedModel:
    """This rank's shard, evaluated and checked; ``sharded_load`` ends in a barrier of every rank."""
    config = read_config(path)
    before = mx.get_active_memory()
    tensor, pipeline = (group, None) if spec.parallel == "tensor" else (None, group)
    try:
        model, tokenizer, config = sharded_load(
            str(path),
            pipeline_group=pipeline,
            tensor_group=tensor,
            return_config=True,
            tokenizer_config={"trust_remote_code": False},
            trust_remote_code=False,
        )
    except Exception as exc:  # mlx-lm raises many kinds; none may escape the runtime
        raise ModelLoadError(f"could not load {path.name}: {type(exc).__name__}: {exc}") from exc
    # Image prompts are not split across ranks yet: a split model serves text, and an
    # image for it is the 400 of a text-only alias.
    return replace(loaded_model(path, model, tokenizer, config, before), vision=None)


def join_load_barrier(group: Any) -> None:
    """Take part in the barrier that ends ``sharded_load`` after failing before it, so the
    ranks that loaded do not wait for this one forever."""
    mx.eval(mx.distributed.all_sum(mx.array(1.0), group=group, stream=mx.cpu))
