"""Load weights, tokenizers and LoRA adapters with mlx-lm, never running remote code.

Encoder embedding models (``config.families``) load through mlx-embeddings instead
(``encoder.py``); they carry the forward pass their embeddings run through and never generate.

An adapted alias reuses the base model's arrays: the adapted model is built as a
skeleton, given the base's parameters, then wrapped with LoRA layers, so the base
weights sit in memory once however many adapters use them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_lm.tuner.utils import load_adapters
from mlx_lm.utils import load_model, load_tokenizer

from mlxd.config.families import VISION_HINT, encoder_family, mlx_vlm_family, vision_extra_installed
from mlxd.errors import ModelCorruptError, ModelLoadError, ModelUnsupportedError
from mlxd.runtime.mlx import encoder
from mlxd.runtime.mlx.vision import VisionBackend, load_vision
from mlxd.runtime.mlx.vlm import (
    TEXT_ONLY_HINT,
    UPGRADE_HINT,
    VlmModel,
    load_vlm,
    needs_vlm,
    wants_vlm,
)
from mlxd.runtime.pooling import PoolingSpec, read_pooling

_CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_length")
#: Values checked per weight array, spread evenly over it: at most 4096 x (number of
#: arrays), about a million values for a 7B model, a few milliseconds against the seconds
#: a load takes. Enough to catch weights damaged by a bad conversion or a bad copy (whole
#: tensors of NaN or Inf), not a lone bad value.
FINITE_SAMPLE = 4096


@dataclass(slots=True)
class LoadedModel:
    """A model ready to generate, with what the scheduler needs to know about it."""

    model: Any
    tokenizer: Any
    context_length: int
    vocab_size: int
    memory_bytes: int
    #: How embeddings pool, as the model's own files say.
    pooling: PoolingSpec = field(default_factory=PoolingSpec)
    #: How the model takes images (mlx-lm's processors or mlx-vlm), ``None`` for a text-only model.
    vision: VisionBackend | None = None
    #: For a vision model served as text (mlx-vlm missing): what an image for it is told to do.
    images_hint: str | None = None
    #: An encoder embedding model's forward pass (mlx-embeddings); ``None`` for mlx-lm models.
    encoder: encoder.EncoderForward | None = None

    @property
    def generates(self) -> bool:
        """False for an encoder embedding model: it only embeds."""
        return self.encoder is None


def read_config(path: Path) -> dict[str, Any]:
    """The model's ``config.json``, refused when it asks to run code of its own."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path.name}: config.json is missing or not JSON") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path.name}: config.json is not an object")
    if "model_file" in config:
        raise ModelLoadError(f"{path.name}: refusing a model that asks to run its own code (model_file)")
    return config


def context_length(config: dict[str, Any], override: int | None) -> int:
    """The model's context window: the alias's override, else its config's, else 4096."""
    if override:
        return override
    for key in _CONTEXT_KEYS:
        value = config.get(key) or config.get("text_config", {}).get(key)
        if isinstance(value, int) and value > 0:
            return value
    return 4096


def check_finite(model: Any, name: str) -> None:
    """Refuse weights whose sampled values are not all finite (NaN or Inf).

    Such a model loads and "works", but every logprob is NaN and every token garbage.
    Only floating-point arrays are checked (quantized weights are packed integers; their
    scales and biases are floats and are checked).
    """
    named = [(key, a) for key, a in tree_flatten(model.parameters()) if mx.issubdtype(a.dtype, mx.floating)]
    if not named:
        return
    checks = []
    for _, array in named:
        flat = array.reshape(-1)
        step = max(1, flat.size // FINITE_SAMPLE)
        checks.append(mx.all(mx.isfinite(flat[::step][:FINITE_SAMPLE])))
    mx.eval(checks)  # one evaluation for all of them
    bad = [key for (key, _), ok in zip(named, checks, strict=True) if not ok.item()]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ModelCorruptError(
            f"{name}: the weights are not finite (NaN or Inf in {bad[0]}{more}); refusing to load them",
            hint="the model files are damaged or badly converted: get them again",
        )


def load_base(path: Path, context_override: int | None = None) -> LoadedModel:
    """Load a model directory's weights and tokenizer, measuring the memory they take."""
    config = read_config(path)
    before = mx.get_active_memory()
    family, forward = encoder_family(config), None
    vision: VisionBackend | None = None
    # A vision family of mlx-vlm's (the ``vision`` extra); without mlx-vlm, or with one that
    # lacks the family, mlx-lm loads its text half where it has a module for the family (its
    # ``sanitize`` drops the tower).
    vlm = family is None and wants_vlm(config)
    text_half = vlm and not mlx_vlm_family(config)
    installed = vision_extra_installed()
    if family is not None:
        model, tokenizer, forward = encoder.load_encoder(path, config, family)
        context_override = context_override or encoder.context_length(config, family)
    else:
        try:
            if vlm and not text_half:
                model, vision = load_vlm(path, config)
            else:
                model, config = load_model(path, lazy=False, strict=True, trust_remote_code=False)
            tokenizer = load_tokenizer(
                path, {"trust_remote_code": False}, eos_token_ids=config.get("eos_token_id")
            )
        except ModelLoadError:
            raise
        except Exception as exc:  # mlx-lm raises many kinds; none may escape the runtime
            why = f"{type(exc).__name__}: {exc}"
            if text_half:
                missing, hint = (
                    ("has no such family", UPGRADE_HINT) if installed else ("is not installed", VISION_HINT)
                )
                raise needs_vlm(
                    path, config, f"which {missing}, and mlx-lm cannot load it ({why})", hint
                ) from exc
            raise ModelLoadError(f"could not load {path.name}: {why}") from exc
    mx.eval(model.parameters())
    loaded = loaded_model(path, model, tokenizer, config, before, context_override, vision, forward)
    if not text_half:
        return loaded
    return replace(loaded, images_hint=UPGRADE_HINT if installed else TEXT_ONLY_HINT)


def loaded_model(
    path: Path,
    model: Any,
    tokenizer: Any,
    config: dict[str, Any],
    before: int,
    context_override: int | None = None,
    vision: VisionBackend | None = None,
    forward: encoder.EncoderForward | None = None,
) -> LoadedModel:
    """A model's evaluated weights checked and described (a whole model or one rank's
    shard); ``before``: the active memory before they were read; ``vision``: mlx-vlm's
    backend when it loaded the model, else mlx-lm's own processors decide; ``forward``: an
    encoder's."""
    check_finite(model, path.name)
    vocab = int(config.get("vocab_size") or config.get("text_config", {}).get("vocab_size") or len(tokenizer))
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        context_length=context_length(config, context_override),
        vocab_size=vocab,
        memory_bytes=max(0, mx.get_active_memory() - before),
        pooling=read_pooling(path),
        vision=vision or (load_vision(model, config, tokenizer) if forward is None else None),
        encoder=forward,
    )


def load_adapted(base: LoadedModel, base_path: Path, adapter_path: Path) -> LoadedModel:
    """A LoRA-adapted view of ``base`` that shares its weight arrays."""
    if not base.generates:
        raise ModelUnsupportedError(
            f"adapter {adapter_path.name}: LoRA adapters apply to mlx-lm models, not encoders"
        )
    try:
        adapter_config = json.loads((adapter_path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"adapter {adapter_path.name}: adapter_config.json is missing or not JSON"
        ) from exc
    if isinstance(base.model, VlmModel):
        raise ModelLoadError(f"adapter {adapter_path.name}: adapters on mlx-vlm models are not supported yet")
    if adapter_config.get("fine_tune_type", "lora") == "full":
        raise ModelLoadError(f"adapter {adapter_path.name}: full fine-tunes are models, not adapters")
    before = mx.get_active_memory()
    try:
        # lazy=True: the skeleton's own arrays are never evaluated, the base's replace them.
        skeleton, _ = load_model(base_path, lazy=True, strict=True, trust_remote_code=False)
        skeleton.update(base.model.parameters())
        adapted = load_adapters(skeleton, str(adapter_path))
        adapted.eval()
        mx.eval(adapted.parameters())
    except Exception as exc:
        raise ModelLoadError(
            f"could not apply adapter {adapter_path.name}: {type(exc).__name__}: {exc}"
        ) from exc
    check_finite(adapted, f"adapter {adapter_path.name}")
    return LoadedModel(
        model=adapted,
        tokenizer=base.tokenizer,
        context_length=base.context_length,
        vocab_size=base.vocab_size,
        memory_bytes=max(0, mx.get_active_memory() - before),
        pooling=base.pooling,
        vision=base.vision,
        images_hint=base.images_hint,
    )
