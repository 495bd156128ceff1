"""Tiny random-weight vision models of mlx-vlm families, built here (nothing from the Hub).

Each directory is what a converted model on the Hub holds: ``config.json`` with its
``vision_config``, ``model.safetensors`` from mlx-vlm's own model class, the demo model's
byte-level BPE tokenizer with the family's image tokens added as special tokens, a chat
template that writes the family's image marker for an image part, and the family's
image-processor config (``preprocessor_config.json``, ``processor_config.json``), which
mlx-vlm's processor reads as it would a real model's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlxd.runtime.demo_tokenizer import END_OF_TEXT, IM_END, SPECIAL_TOKENS, write_json, write_tokenizer

#: ChatML with content parts: text as it is, an image part as the family's marker.
_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' %}{{- '@IMAGE@' }}"
    "{%- elif part['type'] == 'text' %}{{- part['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
_NORM = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def _tokenizer(dest: Path, markers: tuple[str, ...], image_marker: str, named: dict[str, str]) -> Any:
    """The demo tokenizer plus the family's image tokens, and a template that writes them."""
    from tokenizers import AddedToken, Tokenizer

    write_tokenizer(dest, chat_template=False, max_length=4096)
    tokenizer = Tokenizer.from_file(str(dest / "tokenizer.json"))
    tokenizer.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in markers])
    tokenizer.save(str(dest / "tokenizer.json"))
    import json

    config = json.loads((dest / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = _TEMPLATE.replace("@IMAGE@", image_marker)
    config["extra_special_tokens"] = named
    write_json(dest / "tokenizer_config.json", config)
    return tokenizer


def _random_weights(model: Any, seed: int, silent_rows: list[int], tied: bool) -> dict[str, Any]:
    """Seeded normal weights (std 1/sqrt(fan_in)), unit norms, zero biases, evaluated; the
    output rows of ``silent_rows`` are zero, so greedy decoding never picks them."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    params = sorted(tree_flatten(model.parameters()), key=lambda item: item[0])
    keys = mx.random.split(mx.random.key(seed), len(params))
    weights: dict[str, Any] = {}
    for (name, param), key in zip(params, keys, strict=True):
        if tied and name.endswith("lm_head.weight"):  # the embeddings serve as the head
            continue
        if param.ndim == 1:
            weights[name] = (mx.zeros if name.endswith("bias") else mx.ones)(param.shape, dtype=mx.float32)
        else:
            scale = param.shape[-1] ** -0.5
            weights[name] = mx.random.normal(param.shape, dtype=mx.float32, key=key) * scale
    head = "language_model.model.embed_tokens.weight" if tied else "language_model.lm_head.weight"
    mask = mx.ones((weights[head].shape[0], 1), dtype=mx.float32)
    mask[mx.array(silent_rows)] = 0.0
    weights[head] = weights[head] * mask
    mx.eval(weights)
    return weights


def _save(dest: Path, family: str, config: dict[str, Any], tokenizer: Any, seed: int) -> Path:
    import mlx.core as mx
    from mlx_vlm.utils import get_model_and_args, update_module_configs

    module, _ = get_model_and_args(dict(config))
    loading = {"text_config": {}, **config}  # as mlx-vlm's loader reads it
    model_config = module.ModelConfig.from_dict(loading)
    model_config = update_module_configs(model_config, module, loading, ["text", "vision"])
    model = module.Model(model_config)
    text = config.get("text_config", config)
    silent = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    weights = _random_weights(model, seed, silent, tied=bool(text.get("tie_word_embeddings", True)))
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})
    write_json(dest / "config.json", config)
    eos = config.get("eos_token_id")
    write_json(dest / "generation_config.json", {"eos_token_id": eos, "do_sample": False})
    return dest


def _text(tokenizer: Any) -> dict[str, Any]:
    bos, eos = tokenizer.token_to_id(END_OF_TEXT), tokenizer.token_to_id(IM_END)
    return {
        "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 4096,
        "bos_token_id": bos,
        "eos_token_id": [eos, bos],
        "pad_token_id": bos,
        "tie_word_embeddings": True,
    }


def build_gemma3(dest: Path, *, seed: int = 0) -> Path:
    """A Gemma 3 (SigLIP tower, 4 tokens per 32 x 32 image; sliding-window text layers)."""
    dest.mkdir(parents=True, exist_ok=True)
    boi, soft, eoi = "<start_of_image>", "<image_soft_token>", "<end_of_image>"
    tokenizer = _tokenizer(
        dest, (boi, soft, eoi), boi, {"boi_token": boi, "image_token": soft, "eoi_token": eoi}
    )
    text = _text(tokenizer)
    config = {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "image_token_index": tokenizer.token_to_id(soft),
        "mm_tokens_per_image": 4,
        "hidden_size": text["hidden_size"],
        "vocab_size": text["vocab_size"],
        "pad_token_id": text["pad_token_id"],
        "eos_token_id": text["eos_token_id"],
        "text_config": {
            **text,
            "model_type": "gemma3_text",
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 8,
            "sliding_window_pattern": 2,
            "mm_tokens_per_image": 4,
        },
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "patch_size": 8,
            "image_size": 32,
        },
    }
    write_json(
        dest / "preprocessor_config.json",
        {
            "image_processor_type": "Gemma3ImageProcessor",
            "processor_class": "Gemma3Processor",
            "do_resize": True,
            "size": {"height": 32, "width": 32},
            "do_rescale": True,
            "rescale_factor": 1 / 255,
            "do_normalize": True,
            "do_convert_rgb": True,
            "resample": 2,
            **_NORM,
        },
    )
    write_json(dest / "processor_config.json", {"image_seq_length": 4, "processor_class": "Gemma3Processor"})
    return _save(dest, "gemma3", config, tokenizer, seed)


def build_qwen2_5_vl(dest: Path, *, seed: int = 0) -> Path:
    """A Qwen2.5-VL (3-D rotary positions; a 32 x 24 image is 4 tokens after 2 x 2 merging)."""
    return _build_qwen(dest, "qwen2_5_vl", seed, patch=14)


def build_qwen3_vl(dest: Path, *, seed: int = 0) -> Path:
    """A Qwen3-VL (3-D rotary positions, and deepstack features added to the first text layer)."""
    return _build_qwen(dest, "qwen3_vl", seed, patch=16)


def _build_qwen(dest: Path, family: str, seed: int, *, patch: int) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    start, pad, end, video = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>"
    tokenizer = _tokenizer(dest, (start, pad, end, video), start + pad + end, {"image_token": pad})
    text = {
        **_text(tokenizer),
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    }
    vision = {
        "model_type": family,
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "out_hidden_size": 64,
        "num_heads": 2,
        "patch_size": patch,
        "spatial_patch_size": patch,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 4 * patch,
        "fullatt_block_indexes": [1],
        "in_channels": 3,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0],
    }
    tokens = {
        "image_token_id": tokenizer.token_to_id(pad),
        "video_token_id": tokenizer.token_to_id(video),
        "vision_start_token_id": tokenizer.token_to_id(start),
        "vision_end_token_id": tokenizer.token_to_id(end),
    }
    config: dict[str, Any] = {
        "model_type": family,
        "architectures": [
            {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration"}.get(
                family, "Qwen3VLForConditionalGeneration"
            )
        ],
        **tokens,
        "vision_config": vision,
        "eos_token_id": text["eos_token_id"],
        "tie_word_embeddings": True,
    }
    if family == "qwen2_5_vl":  # its text settings sit at the top level
        config.update(text)
    else:
        config["text_config"] = {**text, "model_type": "qwen3_vl_text", "head_dim": 16}
    side = 2 * patch
    write_json(
        dest / "preprocessor_config.json",
        {
            "processor_class": "Qwen2_5_VLProcessor" if family == "qwen2_5_vl" else "Qwen3VLProcessor",
            "patch_size": patch,
            "merge_size": 2,
            "temporal_patch_size": 2,
            "min_pixels": (2 * side) ** 2,
            "max_pixels": (4 * side) ** 2,
            **_NORM,
        },
    )
    return _save(dest, family, config, tokenizer, seed)


#: Each family's vision settings and its text model's, over ``_text``'s (an output head of its
#: own, as mlx-lm's modules for these families expect, but for LFM2's).
_TEXT_HALF_FAMILIES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "llava": ({"model_type": "clip_vision_model", "projection_dim": 64}, {"model_type": "llama"}),
    "pixtral": ({"model_type": "pixtral"}, {"model_type": "mistral", "head_dim": 16}),
    "mistral3": ({"model_type": "pixtral"}, {"model_type": "mistral", "head_dim": 16}),
    "lfm2-vl": (
        {"model_type": "siglip2_vision_model", "num_patches": 16},
        {
            "model_type": "lfm2",
            "layer_types": ["conv", "full_attention"],
            "full_attn_idxs": [1],
            "block_dim": 64,
            "block_ff_dim": 128,
            "block_multiple_of": 16,
            "block_ffn_dim_multiplier": 1.0,
            "block_auto_adjust_ff_dim": False,
            "conv_L_cache": 3,
            "conv_bias": False,
            "norm_eps": 1e-5,
            "tie_word_embeddings": True,
        },
    ),
}
#: The families the tests load as text only (mlx-vlm absent): mlx-lm has a module for each.
TEXT_HALF_FAMILIES = tuple(_TEXT_HALF_FAMILIES)


def build_text_half(dest: Path, family: str, *, seed: int = 0) -> Path:
    """A vision model of one more mlx-vlm family (``TEXT_HALF_FAMILIES``), as mlx-vlm converts it,
    with no processor files: the tests serve it as text only."""
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(dest, ("<image>",), "<image>", {"image_token": "<image>"})
    vision, text = _TEXT_HALF_FAMILIES[family]
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = {
        "model_type": family,
        "image_token_index": tokenizer.token_to_id("<image>"),
        "spatial_merge_size": 2,
        "text_config": {**_text(tokenizer), "tie_word_embeddings": False, **text},
        "vision_config": {**small, "patch_size": 8, "image_size": 32, "head_dim": 16, **vision},
    }
    return _save(dest, family, config, tokenizer, seed)
