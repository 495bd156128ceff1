"""On CUDA, a batch prefill's width is padded up to one of a few sizes.

MLX's CUDA backend plans its attention (cuDNN) per shape, and a shape's first plan cost
40-90 ms on an H100 (``python -m bench.probe DIR --first-round``), more than the prefill of
64 short prompts itself once planned (~20-40 ms). The width of a batch prefill is its
longest prompt, so almost every burst of requests brought a width not seen before and paid
the plan: a 64-client burst of the 1b model prefilled in 38-47 ms at a width seen before and
in 79-122 ms at a new one, its first tokens that much later. Padded up to a multiple of 16
(of 32 beyond 128 tokens), the widths a server meets fall into a few shapes, each planned
once. The padding is right padding, which mlx-lm's batch cache already handles for prompts
of different lengths (rolled into left padding once the prompt is in, masked after): every
real position computes what it did before, for up to a quarter more positions in this
one prefill. Beyond ``MAX_PADDED`` tokens the plan is small against the prefill and the
width stays exact; so it does on Metal and the CPU, whose kernels do not plan per shape,
and for models whose cache is not mlx-lm's plain batch cache (sliding windows, recurrent
layers, a quantized cache).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import mlx.core as mx
from mlx_lm.generate import PromptProcessingBatch, _right_pad_prompts
from mlx_lm.models.cache import BatchKVCache

#: Widths up to this many tokens are padded (a multiple of 16, of 32 beyond 128).
MAX_PADDED = 256


def padded_width(width: int) -> int:
    """The width a prefill of ``width`` tokens runs at: ``width`` itself beyond
    ``MAX_PADDED``, else the next multiple of 16 (of 32 beyond 128)."""
    if width <= 0 or width > MAX_PADDED:
        return width
    step = 16 if width <= 128 else 32
    return -(-width // step) * step


#: mlx-lm's own batch prefill.
_EXACT = PromptProcessingBatch.prompt


def pad_prefill_widths(enabled: bool) -> None:
    """Have mlx-lm's batch prefill pad its widths (``padded_width``) or not, process-wide
    (replacing whatever wrapped it since)."""
    PromptProcessingBatch.prompt = _padded(_EXACT) if enabled else _EXACT


def _padded(prompt: Callable[[Any, list[list[int]]], None]) -> Callable[[Any, list[list[int]]], None]:
    @functools.wraps(prompt)
    def padded_prompt(self: Any, tokens: list[list[int]]) -> None:
        width = max((len(t) for t in tokens), default=0)
        target = padded_width(width)
        caches = self.prompt_cache
        if (
            target == width
            or width > self.prefill_step_size
            or len(self.uids) != len(tokens)
            or not all(type(c) is BatchKVCache for c in caches)
        ):
            prompt(self, tokens)
            return
        # mlx-lm's own steps for a right-padded prompt, at the padded width.
        for kept, new in zip(self.tokens, tokens, strict=True):
            kept += new
        lengths = [len(t) for t in tokens]
        for cache in caches:
            cache.prepare(lengths=lengths, right_padding=[target - n for n in lengths])
        self.model(_right_pad_prompts(tokens, max_length=target), cache=caches)
        mx.eval([c.state for c in caches])
        for cache in caches:
            cache.finalize()
        mx.eval([c.state for c in caches])

    return padded_prompt
