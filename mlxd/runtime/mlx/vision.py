"""Images in prompts: the one prefill path, and mlx-lm's own image processors as its first backend.

A model whose mlx-lm module has a processor (in mlx-lm 0.32, the Muse Spark family) and
an ``embed_inputs`` takes images: the chat template writes one image token per image,
the processor widens each to the image's patch tokens and turns its pixels into the
model's input, and ``embed_inputs`` puts the vision tower's rows at those tokens.

A vision backend (``VisionBackend``: this module's ``VisionSupport``, or mlx-vlm's families
in ``vlm.py``) has two halves. ``prepare`` runs off the worker (admission's thread): it
returns numpy pixels, never MLX arrays, and the cache key, in which each image's patch
tokens carry a negative id made from the image's digest, so two different images of one
size never share a cached prefix. ``embed`` runs on the worker, inside the one ``prefill``
here: the prompt after its cached part, as embeddings, into the sequence's own cache,
which then joins the continuous batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import mlx.core as mx
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class VisionPrompt:
    """A prompt with images, ready for the worker."""

    tokens: list[int]
    #: Each image's preprocessed pixels, in prompt order.
    pixels: list[npt.NDArray[Any]]
    #: Where each image's patch tokens start in ``tokens``.
    starts: list[int]
    #: ``tokens`` with each image's patch tokens replaced by that image's negative id.
    cache_key: list[int]
    #: Per image, what else its processor gave (``image_grid_thw`` for Qwen's families).
    extras: list[dict[str, npt.NDArray[Any]]] = field(default_factory=list)


class VisionBackend(Protocol):
    """How a model takes images: a prompt prepared off the worker, embedded on it."""

    @property
    def serial(self) -> bool:
        """True when a prompt with images must decode alone (its positions are its own: Qwen's
        3-D rotary positions); the runner then runs it without company."""
        ...

    def prepare(
        self, tokenizer: Any, text: str, images: Sequence[npt.NDArray[np.uint8]], digests: Sequence[str]
    ) -> VisionPrompt:
        """Widen each image slot of ``text`` to the image's tokens, tokenize, and key it."""
        ...

    def begin(self, model: Any, prompt: VisionPrompt, end: int) -> None:
        """The prompt is about to run (its first ``end`` tokens go in as embeddings, or come
        from the prompt cache): give the model what places it (Qwen's 3-D positions)."""
        ...

    def embed(self, model: Any, prompt: VisionPrompt, start: int, end: int) -> Any:
        """The input embeddings of ``prompt.tokens[start:end]`` (every image in it whole)."""
        ...

    def release(self, model: Any) -> None:
        """The serial prompt left the model: positions go back to the plain ones."""
        ...


def image_id(digest: str) -> int:
    """A negative token id standing for one image in prompt-cache keys."""
    return -1 - int(digest[:15], 16)


def cache_key(tokens: list[int], token_id: int, digests: Sequence[str]) -> tuple[list[int], list[int]]:
    """Where each run of ``token_id`` starts, and ``tokens`` with each run replaced by the id
    of its image (``digests`` in order)."""
    ids = iter([image_id(d) for d in digests])
    starts: list[int] = []
    key = list(tokens)
    current = 0
    for i, token in enumerate(tokens):
        if token != token_id:
            continue
        if i == 0 or tokens[i - 1] != token_id:
            starts.append(i)
            current = next(ids, current)
        key[i] = current
    return starts, key


@dataclass(frozen=True, slots=True)
class VisionSupport:
    """A model's image processor and the token its images take in the prompt."""

    processor: Any
    image_token_id: int
    serial: bool = False

    def prepare(
        self, tokenizer: Any, text: str, images: Sequence[npt.NDArray[np.uint8]], digests: Sequence[str]
    ) -> VisionPrompt:
        """Widen each image token of ``text`` to the image's patches and tokenize.

        Raises:
            ValueError: the template and the images disagree (the caller makes it a 400).
        """
        expanded, pixel_values = self.processor(text, images=list(images))
        tokens = [int(t) for t in tokenizer.encode(expanded, add_special_tokens=False)]
        starts, key = cache_key(tokens, self.image_token_id, digests)
        if len(starts) != len(images):
            raise ValueError(f"the prompt has {len(starts)} image slots for {len(images)} images")
        return VisionPrompt(tokens, [np.asarray(p) for p in pixel_values], starts, key)

    def begin(self, model: Any, prompt: VisionPrompt, end: int) -> None:
        """Nothing to place: positions are the cache's own."""

    def embed(self, model: Any, prompt: VisionPrompt, start: int, end: int) -> Any:
        """``embed_inputs`` puts the vision tower's rows at the image tokens."""
        pixels = [mx.array(p) for p, s in zip(prompt.pixels, prompt.starts, strict=True) if s >= start]
        return model.embed_inputs(mx.array(prompt.tokens[start:end]), pixel_values=pixels or None)

    def release(self, model: Any) -> None:
        """Nothing to undo: positions are the cache's own."""


def load_vision(model: Any, config: dict[str, Any], tokenizer: Any) -> VisionSupport | None:
    """The model's image support, when mlx-lm has a processor for it (``None``: text only)."""
    if not config.get("vision_config") or not hasattr(model, "embed_inputs"):
        return None
    from mlx_lm.processors import load_processor

    processor = load_processor(model, config)
    if processor is None:
        return None
    token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    if not isinstance(token_id, int):
        return None
    return VisionSupport(processor, token_id)


def prefill(
    backend: VisionBackend, model: Any, prompt: VisionPrompt, cached: int, layers: list[Any], step: int
) -> tuple[list[Any], int]:
    """Run the prompt after its first ``cached`` tokens (minus the last one, which the batch
    feeds) through ``model`` as the backend's embeddings, ``step`` tokens at a time, into ``layers``.

    Returns the cache and how many tokens it holds. A cached part that ends inside an
    image's patches is cut back to the image's start, so an image is always embedded whole.
    """
    for start in prompt.starts:
        if start < cached < start + _run_length(prompt.cache_key, start):
            cached = start
            for layer in layers:
                layer.trim(layer.offset - start)
            break
    end = len(prompt.tokens) - 1
    backend.begin(model, prompt, end)
    rest = prompt.tokens[cached:end]
    if not rest:
        return layers, cached
    embeddings = backend.embed(model, prompt, cached, end)
    mx.eval(embeddings)
    for offset in range(0, len(rest), step):
        chunk = mx.array(rest[offset : offset + step])[None]
        model(chunk, cache=layers, input_embeddings=embeddings[offset : offset + step][None])
        mx.eval([layer.state for layer in layers])
    return layers, end


def _run_length(key: list[int], start: int) -> int:
    value, n = key[start], 0
    while start + n < len(key) and key[start + n] == value:
        n += 1
    return n
