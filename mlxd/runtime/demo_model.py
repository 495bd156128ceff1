"""Build tiny random-weight models locally: for tests, ``mlxd serve --demo`` and the benchmark.

Nothing can be downloaded here, so one builder writes a real mlx-lm model directory: a
``llama`` architecture from ``mlx_lm.models`` (or ``qwen3``, or ``ministral3``, a family mlx-lm can
split as a pipeline over several ranks) with seeded random weights and a real byte-level
BPE tokenizer (``demo_tokenizer``) trained on a short English text. The output is
bit-identical for a given seed, so it doubles as a cache key (``DEMO_VERSION``).

Random weights make gibberish. Two deliberate properties help tests: the output rows of
the special tokens are zero, so greedy decoding never emits them (runs go to
``max_tokens``); and the tokenizer uses the ByteLevel decoder, so mlx-lm picks its
``BPEStreamingDetokenizer``.

Every array is evaluated before a function returns: MLX streams are thread-local, and a
lazy array that escapes to another thread fails there.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from mlxd.runtime.demo_tokenizer import (
    END_OF_TEXT,
    IM_END,
    SPECIAL_TOKENS,
    THINK_TOKENS,
    write_json,
    write_tokenizer,
)

DEMO_VERSION = "2"
#: The architectures the builder writes: ``ministral3`` can also be loaded as a pipeline.
ModelType = Literal["llama", "qwen3", "ministral3"]


def _random_weights(model: Any, seed: int, silent_rows: list[int]) -> dict[str, Any]:
    """Seeded normal weights (std 1/sqrt(fan_in)) and unit norms, evaluated.

    The output-head rows in ``silent_rows`` are zeroed so greedy decoding never picks them.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten

    params = sorted(tree_flatten(model.parameters()), key=lambda item: item[0])
    keys = mx.random.split(mx.random.key(seed), len(params))
    weights: dict[str, Any] = {}
    for (name, param), key in zip(params, keys, strict=True):
        if param.ndim == 1:  # RMSNorm scales: start as the identity
            weights[name] = mx.ones(param.shape, dtype=mx.float32)
        else:
            scale = param.shape[-1] ** -0.5
            weights[name] = mx.random.normal(param.shape, dtype=mx.float32, key=key) * scale
    head = "lm_head.weight" if "lm_head.weight" in weights else "model.embed_tokens.weight"
    mask = mx.ones((weights[head].shape[0], 1), dtype=mx.float32)
    mask[mx.array(silent_rows)] = 0.0
    weights[head] = weights[head] * mask
    mx.eval(weights)
    return weights


def build_tiny_model(
    dest: Path,
    *,
    seed: int = 0,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 2048,
    chat_template: bool = True,
    tie_word_embeddings: bool = True,
    thinking: bool = False,
    model_type: ModelType = "llama",
) -> Path:
    """Write a loadable mlx-lm model directory (llama, ``qwen3`` or ``ministral3``; random
    weights) to dest; return dest.

    The same arguments always give byte-identical files. ``ministral3`` models also get
    the ``model.safetensors.index.json`` a pipeline load reads.
    """
    import importlib

    import mlx.core as mx

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tokenizer(
        dest, chat_template=chat_template, max_length=max_position_embeddings, thinking=thinking
    )
    bos_id, eos_id = tokenizer.token_to_id(END_OF_TEXT), tokenizer.token_to_id(IM_END)
    architecture = {
        "llama": "LlamaForCausalLM",
        "qwen3": "Qwen3ForCausalLM",
        "ministral3": "Ministral3ForCausalLM",
    }[model_type]
    config: dict[str, Any] = {
        "model_type": model_type,
        "architectures": [architecture],
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": bos_id,
        # Both end a turn, as in ChatML models; the first is the tokenizer's eos_token.
        "eos_token_id": [eos_id, bos_id],
        "pad_token_id": bos_id,
        "torch_dtype": "float32",
        "head_dim": hidden_size // num_heads,
    }
    if model_type == "ministral3":
        config["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": config.pop("rope_theta"),
            "llama_4_scaling_beta": 0.1,
            "original_max_position_embeddings": max_position_embeddings,
        }
    family = importlib.import_module(f"mlx_lm.models.{model_type}")
    model = family.Model(family.ModelArgs.from_dict(config))
    silent = [
        tokenizer.token_to_id(token) for token in (*SPECIAL_TOKENS, *(THINK_TOKENS if thinking else ()))
    ]
    weights = _random_weights(model, seed, silent)
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    if model_type == "ministral3":
        index = {"metadata": {}, "weight_map": dict.fromkeys(sorted(weights), "model.safetensors")}
        write_json(dest / "model.safetensors.index.json", index)
    write_json(dest / "config.json", config)
    generation = {"bos_token_id": bos_id, "eos_token_id": config["eos_token_id"]}
    write_json(dest / "generation_config.json", generation)
    return dest


def build_small_model(dest: Path, *, seed: int = 0) -> Path:
    """Same builder at ~76M parameters, for benchmarks where the engine should dominate."""
    return build_tiny_model(
        dest,
        seed=seed,
        num_layers=12,
        hidden_size=768,
        num_heads=12,
        num_kv_heads=4,
        intermediate_size=2048,
        max_position_embeddings=4096,
    )


def build_draft_model(base: Path, dest: Path, *, num_layers: int) -> Path:
    """A draft for speculative decoding: ``base`` cut to its first ``num_layers`` layers.

    It keeps the embeddings, the final norm and the tokenizer, so with random weights it
    still agrees with ``base`` on a share of its tokens (a draft of other random weights
    agrees on almost none), as a real smaller model of the same family does.
    """
    import json

    import mlx.core as mx

    base, dest = Path(base), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for path in base.iterdir():
        if path.is_file() and path.name not in ("model.safetensors", "config.json"):
            shutil.copyfile(path, dest / path.name)
    weights = mx.load(str(base / "model.safetensors"))
    kept = {
        name: array
        for name, array in weights.items()  # type: ignore[union-attr]
        if not name.startswith("model.layers.") or int(name.split(".")[2]) < num_layers
    }
    mx.save_safetensors(str(dest / "model.safetensors"), kept, metadata={"format": "mlx"})
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    write_json(dest / "config.json", {**config, "num_hidden_layers": num_layers})
    return dest


def build_lora_adapter(
    base: Path,
    dest: Path,
    *,
    seed: int = 1,
    rank: int = 4,
    num_layers: int | None = None,
    scale: float = 10.0,
) -> Path:
    """Write an mlx-lm LoRA adapter directory for the model at base; return dest.

    Uses mlx-lm's own LoRA layers, with seeded non-zero ``lora_a`` and ``lora_b`` so the
    adapter visibly changes the logits. ``num_layers`` counts from the last block
    (None: all). mlx-lm's LoRA init draws from MLX's thread-local global PRNG.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from mlx_lm.utils import load_model

    # Lazy: only the shapes matter, the base weights are never read.
    model, _ = load_model(Path(base), lazy=True)
    layers = len(model.layers) if num_layers is None else num_layers
    lora_parameters = {"rank": rank, "scale": scale, "dropout": 0.0}
    model.freeze()
    linear_to_lora_layers(model, layers, lora_parameters)
    params = sorted(tree_flatten(model.trainable_parameters()), key=lambda item: item[0])
    keys = mx.random.split(mx.random.key(seed), len(params))
    weights: dict[str, Any] = {}
    for (name, param), key in zip(params, keys, strict=True):
        # lora_a is (in, rank): unit-variance projections; lora_b is (rank, out): small.
        std = param.shape[0] ** -0.5 if name.endswith("lora_a") else 0.02
        weights[name] = mx.random.normal(param.shape, dtype=mx.float32, key=key) * std
    mx.eval(weights)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(dest / "adapters.safetensors"), weights, metadata={"format": "mlx"})
    config = {"fine_tune_type": "lora", "num_layers": layers, "lora_parameters": lora_parameters}
    write_json(dest / "adapter_config.json", config)
    return dest
