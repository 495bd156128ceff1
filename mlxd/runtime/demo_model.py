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

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from mlxd.runtime.demo_tokenizer import (
    END_OF_TEXT,
    IM_END,
    SPECIAL_TOKENS,
    THINK_TOKENS,
    write_json,
    write_tokenizer,
    write_wordpiece_tokenizer,
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


def build_embedding_model(dest: Path, *, seed: int = 0, **sizes: int) -> Path:
    """A tiny decoder embedding model, as the Qwen3-Embedding family ships: a ``qwen3``
    architecture with sentence-transformers files (last-token pooling, then normalize).
    ``sizes`` are ``build_tiny_model``'s (``hidden_size``, ``num_layers``, …)."""
    dest = build_tiny_model(dest, seed=seed, model_type="qwen3", chat_template=False, **sizes)  # type: ignore[arg-type]
    _sentence_transformers(dest, "lasttoken", sizes.get("hidden_size", 64))
    return dest


def _sentence_transformers(dest: Path, pooling: str, dimension: int) -> None:
    """Write the sentence-transformers files of an embedding model: ``pooling`` (``mean``,
    ``cls`` or ``lasttoken``), then normalize."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    write_json(dest / "modules.json", modules)
    (dest / "1_Pooling").mkdir(exist_ok=True)
    config: dict[str, Any] = {"word_embedding_dimension": dimension, "include_prompt": True}
    for mode in ("cls_token", "mean_tokens", "lasttoken"):
        config[f"pooling_mode_{mode}"] = mode.startswith(pooling)
    write_json(dest / "1_Pooling" / "config.json", config)


#: The encoder families ``build_encoder_model`` writes, with their config fields.
_ENCODERS: dict[str, dict[str, Any]] = {
    "bert": {"architectures": ["BertModel"], "type_vocab_size": 2, "layer_norm_eps": 1e-12},
    "xlm-roberta": {"architectures": ["XLMRobertaModel"], "type_vocab_size": 1, "layer_norm_eps": 1e-5},
    "modernbert": {
        "architectures": ["ModernBertModel"],
        "local_attention": 16,
        "global_attn_every_n_layers": 2,
    },
}


def build_encoder_model(
    dest: Path,
    *,
    family: str = "bert",
    pooling: str = "mean",
    seed: int = 0,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
) -> Path:
    """A tiny encoder embedding model, as bge / e5 / modernbert-embed ship: an architecture
    of mlx-embeddings (``bert``, ``xlm-roberta`` or ``modernbert``; it must be installed, the
    ``mlxd[embeddings]`` extra) with seeded random weights, a WordPiece tokenizer, and
    sentence-transformers files (``pooling``, then normalize). Byte-identical per arguments."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = write_wordpiece_tokenizer(dest, max_length=max_position_embeddings)
    config: dict[str, Any] = {
        "model_type": family,
        **_ENCODERS[family],
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "intermediate_size": intermediate_size,
        # XLM-RoBERTa's positions start after its padding index.
        "max_position_embeddings": max_position_embeddings + (2 if family == "xlm-roberta" else 0),
        "pad_token_id": tokenizer.token_to_id("[PAD]"),
        "torch_dtype": "float32",
    }
    arch = importlib.import_module(f"mlx_embeddings.models.{family.replace('-', '_')}")
    model = arch.Model(arch.ModelArgs.from_dict(config))
    params = sorted(tree_flatten(model.parameters()), key=lambda item: item[0])
    keys = mx.random.split(mx.random.key(seed), len(params))
    weights: dict[str, Any] = {}
    for (name, param), key in zip(params, keys, strict=True):
        if param.ndim == 1:  # layer norms start as the identity, biases at zero
            weights[name] = (mx.ones if name.endswith("weight") else mx.zeros)(param.shape, dtype=mx.float32)
        else:
            weights[name] = mx.random.normal(param.shape, dtype=mx.float32, key=key) * param.shape[-1] ** -0.5
    mx.eval(weights)
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    write_json(dest / "config.json", config)
    _sentence_transformers(dest, pooling, hidden_size)
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


_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
_STALE_BUILD_SECONDS = 3600


def _is_complete(path: Path) -> bool:
    """Whether ``path`` holds every file a model directory needs."""
    return all((path / name).is_file() for name in _MODEL_FILES)


def _fsync_tree(path: Path) -> None:
    """Flush every file and the directory itself, so a rename never publishes lost data."""
    for child in [*path.iterdir(), path]:
        fd = os.open(child, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_builds(data_dir: Path, prefix: str) -> None:
    """Delete temp dirs that crashed builds left behind (old enough not to be running)."""
    cutoff = time.time() - _STALE_BUILD_SECONDS
    for path in data_dir.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            if path.is_dir() and path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)


def ensure_demo_model(data_dir: Path) -> Path:
    """Build the demo model once under ``data_dir/demo-<DEMO_VERSION>``; return its path.

    Builds into a temp dir beside it and renames it into place, so a crash or a
    concurrent build never leaves a half model; a hand-damaged directory is rebuilt.
    """
    data_dir = Path(data_dir)
    final = data_dir / f"demo-{DEMO_VERSION}"
    if _is_complete(final):
        return final
    data_dir.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    _remove_stale_builds(data_dir, prefix)
    if final.exists():
        # Only reachable by hand damage: move it aside first, as removal is not atomic.
        trash = Path(tempfile.mkdtemp(prefix=prefix, dir=data_dir))
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, trash / "damaged")
        shutil.rmtree(trash, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=data_dir))
    try:
        build_tiny_model(tmp)
        _fsync_tree(tmp)
        try:
            # POSIX rename refuses a non-empty target: the first finished build wins.
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
