"""Vision models of mlx-vlm's families (Gemma 3, Qwen2.5-VL, Qwen3-VL, …): the optional extra
``mlxd[vision]``, behind the same vision interface as mlx-lm's own processors (``vision.py``).

mlx-vlm's language models are mlx-lm-like, but their forward returns an output object,
takes ``inputs_embeds`` and makes caches of mlx-vlm's own classes. ``VlmModel`` gives the
runner what it gives every mlx-lm model: ``model(tokens, cache=…, input_embeddings=…)``
returning logits, and mlx-lm's cache classes, so the batch, the lone decoder, the prompt
cache and the warm-up run it unchanged. ``VlmVision`` is the vision backend: mlx-vlm's
processor prepares the prompt off the worker, its ``get_input_embeddings`` (the vision
tower's rows at the image tokens) feeds the one prefill path.

Qwen's families place tokens with 3-D rotary positions (M-RoPE): an image's tokens share
positions, so after it every position is shifted by a delta of that prompt's own.
``VlmModel`` passes the positions explicitly (the prompt's own while it prefills, the
cache offset plus its delta after), never relying on mlx-vlm's per-model state. One delta
per model: a prompt with images on such a model decodes alone (``serial``), and prompts
without images (delta 0) batch together as usual.

Without mlx-vlm, or with an mlx-vlm that has no such family, the loader gives it to mlx-lm,
whose modules for multimodal families load the text half of their checkpoints (their
``sanitize`` drops the vision tower; the tests load Gemma 3, Qwen2.5-VL, Qwen3-VL, LLaVA,
Pixtral, Mistral 3 and LFM2-VL this way): the model serves text, and an image for it is the
400 of a text-only alias, with ``TEXT_ONLY_HINT`` (``UPGRADE_HINT``). A family mlx-lm cannot
load stays a 422 naming the extra (``needs_vlm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import numpy.typing as npt
from mlx_lm.models.cache import KVCache, RotatingKVCache

from mlxd.config.families import VISION_HINT
from mlxd.errors import ModelLoadError, ModelUnsupportedError
from mlxd.runtime.mlx.vision import VisionPrompt, cache_key

#: What an image for such a model loaded as text (mlx-vlm missing) is told to do.
TEXT_ONLY_HINT = f"its vision tower needs mlx-vlm: {VISION_HINT}"
#: The same when mlx-vlm is installed but has no such family (an mlx-vlm older than the model).
UPGRADE_HINT = "its vision tower needs a newer mlx-vlm: pip install -U mlx-vlm"


def wants_vlm(config: dict[str, Any]) -> bool:
    """True for a vision model that mlx-lm's own processors do not cover (mlx-vlm's to serve,
    when it is installed)."""
    if not config.get("vision_config"):
        return False
    import importlib.util

    family = config.get("processor_type") or config.get("model_type")
    return not isinstance(family, str) or importlib.util.find_spec(f"mlx_lm.processors.{family}") is None


class VlmModel(nn.Module):  # type: ignore[misc]  # mlx has no type stubs
    """An mlx-vlm model with the face of an mlx-lm model (see the module docstring)."""

    def __init__(self, vlm: Any) -> None:
        super().__init__()
        self.vlm = vlm
        #: Its text half; ``embed.hidden_states`` finds ``language_model.model`` here.
        self.language_model = vlm.language_model
        self.mrope = hasattr(vlm.language_model, "get_rope_index")
        #: The prompt with images being prefilled: its length, (3, 1, N) positions (M-RoPE),
        #: and what else its language model takes while the prompt runs (Qwen3-VL's
        #: deepstack features); after it, every position is shifted by ``_delta``.
        self._prompt_length = 0
        self._positions: mx.array | None = None
        self._extras: dict[str, Any] = {}
        self._delta = 0

    @property
    def layers(self) -> list[Any]:
        return list(self.language_model.layers)

    def make_cache(self) -> list[Any]:
        """mlx-lm's cache classes, of the kinds mlx-vlm's own ``make_cache`` would make."""
        make = getattr(self.language_model, "make_cache", None)
        if make is None:
            return [KVCache() for _ in self.layers]
        caches: list[Any] = []
        for layer in make():
            kind = type(layer).__name__
            if kind == "KVCache":
                caches.append(KVCache())
            elif kind == "RotatingKVCache":
                caches.append(RotatingKVCache(max_size=layer.max_size, keep=layer.keep))
            else:
                raise ModelUnsupportedError(f"its {kind} layers cannot share mlxd's batch")
        return caches

    def set_prompt(self, length: int, positions: mx.array | None, delta: int) -> None:
        """The prompt with images about to prefill (``length`` 0: none, plain positions)."""
        self._prompt_length, self._positions, self._delta = length, positions, delta
        self._extras = {}

    def set_extras(self, extras: dict[str, Any]) -> None:
        """What the language model takes besides the embeddings while the prompt prefills."""
        self._extras = extras

    def __call__(self, inputs: mx.array, cache: Any = None, input_embeddings: Any = None) -> mx.array:
        batch, length = inputs.shape
        offset = cache[0].offset if cache else 0
        prefilling = isinstance(offset, int) and offset + length <= self._prompt_length
        extra: dict[str, Any] = dict(self._extras) if prefilling else {}
        if self.mrope:
            if prefilling and self._positions is not None:
                extra["position_ids"] = self._positions[..., offset : offset + length]
            else:
                start = mx.array(offset).reshape(-1, 1) if isinstance(offset, mx.array) else offset
                rows = mx.broadcast_to(mx.arange(length)[None] + start + self._delta, (batch, length))
                extra["position_ids"] = mx.broadcast_to(rows[None], (3, batch, length))
        out = self.language_model(inputs, inputs_embeds=input_embeddings, cache=cache, **extra)
        return out.logits  # type: ignore[no-any-return]


class VlmVision:
    """mlx-vlm's processor and vision tower as a vision backend (``vision.VisionBackend``)."""

    def __init__(self, processor: Any, image_token_id: int, model_type: str, serial: bool) -> None:
        self.processor = processor
        self.image_token_id = image_token_id
        self.model_type = model_type
        self.serial = serial

    def prepare(
        self, tokenizer: Any, text: str, images: Sequence[npt.NDArray[np.uint8]], digests: Sequence[str]
    ) -> VisionPrompt:
        """mlx-vlm's own input preparation (as its ``generate`` does it), into numpy.

        Raises:
            ValueError: the template and the images disagree (the caller makes it a 400).
        """
        from mlx_vlm.utils import prepare_inputs, should_add_special_tokens
        from PIL import Image

        inputs = prepare_inputs(
            self.processor,
            images=[Image.fromarray(image) for image in images],
            prompts=text,
            image_token_index=self.image_token_id,
            add_special_tokens=should_add_special_tokens(self.model_type, self.processor),
        )
        tokens = [int(t) for t in np.asarray(inputs["input_ids"]).reshape(-1)]
        starts, key = cache_key(tokens, self.image_token_id, digests)
        if len(starts) != len(images):
            raise ValueError(f"the prompt has {len(starts)} image slots for {len(images)} images")
        pixels = np.asarray(inputs["pixel_values"])
        grids = inputs.get("image_grid_thw")
        if grids is not None:  # Qwen's families: each image is its grid's patches, in a row
            grid = np.asarray(grids).reshape(len(images), -1)
            cuts = np.cumsum([int(np.prod(g)) for g in grid])[:-1]
            return VisionPrompt(
                tokens, np.split(pixels, cuts), starts, key, [{"image_grid_thw": g[None]} for g in grid]
            )
        return VisionPrompt(tokens, list(np.split(pixels, len(images))), starts, key)

    def begin(self, model: Any, prompt: VisionPrompt, end: int) -> None:
        """The whole prompt's positions for Qwen's families (its images included), also when
        the prompt cache holds all of it: the tokens after it are shifted by its delta."""
        positions, delta = None, 0
        if model.mrope:
            every = [e["image_grid_thw"] for e in prompt.extras]
            grid = mx.array(np.concatenate(every)) if every else None
            tokens = mx.array([prompt.tokens])
            positions, shift = model.vlm.language_model.get_rope_index(tokens, grid, None, None)
            delta = int(np.asarray(shift).reshape(-1)[0])
        model.set_prompt(end, positions, delta)

    def embed(self, model: Any, prompt: VisionPrompt, start: int, end: int) -> Any:
        """mlx-vlm's ``get_input_embeddings`` for the tokens and the images from ``start`` on;
        what else the language model takes while they run (Qwen3-VL's deepstack features)
        goes to the model."""
        vlm = model.vlm
        chosen = [i for i, s in enumerate(prompt.starts) if s >= start]
        kwargs: dict[str, Any] = {}
        if prompt.extras and chosen:
            grids = [prompt.extras[i]["image_grid_thw"] for i in chosen]
            kwargs["image_grid_thw"] = mx.array(np.concatenate(grids))
        pixels = mx.array(np.concatenate([prompt.pixels[i] for i in chosen])) if chosen else None
        tokens = mx.array([prompt.tokens[start:end]])
        ones = mx.ones(tokens.shape, dtype=mx.int32)
        features = vlm.get_input_embeddings(tokens, pixels, mask=ones, **kwargs)
        model.set_extras(_prefill_extras(features, start))
        return features.inputs_embeds[0]

    def release(self, model: Any) -> None:
        """Back to plain positions once the prompt with images has left the model."""
        model.set_prompt(0, None, 0)


#: What ``get_input_embeddings`` gives besides the embeddings that mlxd knows: its own
#: positions (computed over the whole prompt instead), a 4-D mask (causal is the default).
_KNOWN = frozenset({"inputs_embeds", "position_ids", "rope_deltas", "attention_mask_4d"})
#: Qwen3-VL's deepstack features: added to the first layers' hidden states at the image
#: tokens while the prompt runs; the mask is laid over the whole prompt, as mlx-vlm expects.
_DEEPSTACK = ("visual_pos_masks", "deepstack_visual_embeds")


def _prefill_extras(features: Any, start: int) -> dict[str, Any]:
    given = {k: v for k, v in features.to_dict().items() if v is not None and k not in _KNOWN}
    unknown = set(given) - set(_DEEPSTACK)
    if unknown:
        raise RuntimeError(f"this mlx-vlm family needs {sorted(unknown)}, which mlxd does not pass yet")
    mask = given.get("visual_pos_masks")
    if mask is not None:
        given["visual_pos_masks"] = mx.concatenate([mx.zeros((1, start), dtype=mask.dtype), mask], axis=1)
    return given


def load_vlm(path: Path, config: dict[str, Any]) -> tuple[VlmModel, VlmVision]:
    """Load an mlx-vlm family's weights and processor (never running the model's own code).

    Raises:
        ModelUnsupportedError: mlx-vlm cannot be imported (the hint says how to install it),
            or it has no such family.
    """
    try:
        from mlx_vlm.utils import get_model_and_args, load_model, load_processor
    except ImportError as exc:
        raise needs_vlm(path, config, f"which cannot be imported ({exc})") from exc
    try:
        get_model_and_args(dict(config))
    except (ValueError, KeyError) as exc:
        raise ModelUnsupportedError(
            f"{path.name}: mlx-vlm has no {config.get('model_type')!r} family",
            hint="upgrade mlx-vlm, or use a model of a family it serves",
        ) from exc
    try:
        vlm = load_model(path, lazy=False, strict=True, trust_remote_code=False)
        processor = load_processor(path, add_detokenizer=False, trust_remote_code=False)
    except Exception as exc:  # mlx-vlm and transformers raise many kinds; none may escape
        raise ModelLoadError(f"could not load {path.name}: {type(exc).__name__}: {exc}") from exc
    model = VlmModel(vlm)
    model.make_cache()  # refuses cache kinds the batch cannot take, before anyone waits
    token = _image_token_id(vlm.config, config)
    if token is None:
        raise ModelUnsupportedError(f"{path.name}: its config names no image token")
    return model, VlmVision(processor, token, str(config.get("model_type")), serial=model.mrope)


def needs_vlm(path: Path, config: dict[str, Any], why: str, hint: str = VISION_HINT) -> ModelUnsupportedError:
    """The 422 of a vision model only mlx-vlm can load, saying ``why`` it cannot, and how to
    install it (``hint``: or upgrade it)."""
    return ModelUnsupportedError(
        f"{path.name} is a vision model of the {config.get('model_type')!r} family, served through mlx-vlm, {why}",
        hint=hint,
    )


def _image_token_id(model_config: Any, config: dict[str, Any]) -> int | None:
    for name in ("image_token_index", "image_token_id"):
        value = getattr(model_config, name, None) or config.get(name)
        if isinstance(value, int):
            return value
    return None
