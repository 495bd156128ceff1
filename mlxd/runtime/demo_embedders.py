"""Build tiny random-weight embedding models locally, for tests and the benchmark.

A decoder embedding model is the tiny llama of ``demo_model`` with sentence-transformers
files (last-token pooling, normalized), as the Qwen3-Embedding family ships them. An
encoder model (BERT, XLM-RoBERTa, ModernBERT) is built from mlx-embeddings' own
architecture (the ``mlxd[embeddings]`` extra) with a real WordPiece tokenizer. Every array
is evaluated before a function returns, as in ``demo_model``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from mlxd.runtime.demo_model import build_tiny_model
from mlxd.runtime.demo_tokenizer import write_json, write_wordpiece_tokenizer


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
