"""Accelerator-sized random models for ``python -m bench --gpu``: built with MLX where they run.

``python -m bench.gpu_models DEST PRESET`` writes a bf16 llama (random weights) with the
demo tokenizer whose vocabulary is padded with plain tokens (``<xN>``, never produced by
encoding) up to a realistic size, so the output layer costs what a real model's does and
a sampled end token is rare. Built on the device itself, in seconds, with MLX's own
random numbers: nothing large travels to the machine.

Presets: ``1b`` (hidden 2048, 16 layers, 32 heads / 8 KV heads, MLP 8192, vocab 32,000,
~1.1B parameters) and ``8b`` (Llama-3-8B's shape: hidden 4096, 32 layers, 32 / 8 heads,
MLP 14,336, vocab 128,256).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, int]] = {
    "1b": {"hidden": 2048, "layers": 16, "mlp": 8192, "heads": 32, "kv_heads": 8, "vocab": 32000},
    "8b": {"hidden": 4096, "layers": 32, "mlp": 14336, "heads": 32, "kv_heads": 8, "vocab": 128256},
}


def _padded_tokenizer(dest: Path, vocab: int) -> tuple[int, int]:
    """The demo tokenizer with its BPE vocabulary padded to ``vocab``; (bos, eos) ids."""
    from mlxd.runtime.demo_tokenizer import END_OF_TEXT, IM_END, write_tokenizer

    tokenizer = write_tokenizer(dest, chat_template=True, max_length=8192)
    ids = (tokenizer.token_to_id(END_OF_TEXT), tokenizer.token_to_id(IM_END))
    path = dest / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    table: dict[str, int] = data["model"]["vocab"]
    size = max(len(table), 1 + max(t["id"] for t in data.get("added_tokens", [])))
    for index in range(vocab - size):
        table[f"<x{index}>"] = size + index
    path.write_text(json.dumps(data), encoding="utf-8")
    return ids


def build(dest: Path, preset: str, seed: int = 0) -> Path:
    """Write the model directory; return ``dest``."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    shape = PRESETS[preset]
    dest.mkdir(parents=True, exist_ok=True)
    bos, eos = _padded_tokenizer(dest, shape["vocab"])
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": shape["vocab"],
        "hidden_size": shape["hidden"],
        "num_hidden_layers": shape["layers"],
        "num_attention_heads": shape["heads"],
        "num_key_value_heads": shape["kv_heads"],
        "intermediate_size": shape["mlp"],
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "bfloat16",
    }
    model = llama.Model(llama.ModelArgs.from_dict(config))
    params = sorted(tree_flatten(model.parameters()), key=lambda item: item[0])
    keys = mx.random.split(mx.random.key(seed), len(params))
    weights = {}
    for (name, param), key in zip(params, keys, strict=True):
        if param.ndim == 1:
            weights[name] = mx.ones(param.shape, dtype=mx.bfloat16)
        else:
            weights[name] = (mx.random.normal(param.shape, key=key) * 0.02).astype(mx.bfloat16)
        mx.eval(weights[name])
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    (dest / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return dest


def build_in_subprocess(dest: Path, preset: str) -> Path:
    """``build`` in a process of its own, so the harness never holds MLX or the weights."""
    import subprocess

    subprocess.run([sys.executable, "-m", "bench.gpu_models", str(dest), preset], check=True)
    return dest


if __name__ == "__main__":
    build(Path(sys.argv[1]), sys.argv[2])
