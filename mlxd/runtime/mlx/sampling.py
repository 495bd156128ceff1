"""Samplers, logits processors and logprob extraction built from ``SamplingParams``."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import mlx.core as mx
from mlx_lm.sample_utils import (
    apply_min_p,
    apply_top_k,
    apply_top_p,
    make_logits_processors,
)
from mlx_lm.sample_utils import make_sampler as mlx_make_sampler

from mlxd.runtime.engine import SamplingParams

Sampler = Callable[[Any], Any]
LogitsProcessor = Callable[[Any, Any], Any]


@lru_cache(maxsize=256)
def shared_sampler(temperature: float, top_p: float, top_k: int, min_p: float) -> Sampler:
    """One sampler object per parameter set, so equal rows sample in one batched call."""
    return mlx_make_sampler(temp=temperature, top_p=top_p, top_k=top_k, min_p=min_p)  # type: ignore[no-any-return]


def _seeded_sampler(params: SamplingParams, seed: int) -> Sampler:
    """A sampler with its own random key: the same seed gives the same tokens in any batch."""
    key = mx.random.key(seed % 2**64)
    filters: list[Callable[[Any], Any]] = []
    if 0 < params.top_p < 1.0:
        filters.append(lambda x: apply_top_p(x, params.top_p))
    if params.min_p > 0:
        filters.append(lambda x: apply_min_p(x, params.min_p))
    if params.top_k > 0:
        filters.append(lambda x: apply_top_k(x, params.top_k))
    inverse_temperature = 1.0 / params.temperature

    def sample(logprobs: Any) -> Any:
        nonlocal key
        key, step = mx.random.split(key)
        for apply in filters:
            logprobs = apply(logprobs)
        return mx.random.categorical(logprobs * inverse_temperature, key=step)

    return sample


def make_sampler(params: SamplingParams) -> Sampler:
    """The sampler for one sequence: shared when unseeded or greedy, private when seeded."""
    if params.seed is not None and params.temperature > 0:
        return _seeded_sampler(params, params.seed)
    return shared_sampler(*params.sampler_key)


def make_processors(params: SamplingParams) -> list[LogitsProcessor]:
    """Penalties and logit bias, as mlx-lm logits processors (empty when none apply)."""
    return make_logits_processors(  # type: ignore[no-any-return]
        logit_bias=dict(params.logit_bias) or None,
        repetition_penalty=params.repetition_penalty if params.repetition_penalty != 1.0 else None,
        repetition_context_size=params.repetition_context_size,
        presence_penalty=params.presence_penalty or None,
        frequency_penalty=params.frequency_penalty or None,
    )


def top_logprobs(logprobs: Any, k: int) -> list[tuple[int, float]]:
    """The ``k`` most likely tokens of one row, most likely first."""
    if k <= 0:
        return []
    k = min(k, logprobs.shape[-1])
    ids = mx.argpartition(-logprobs, kth=k - 1)[:k]
    id_list: list[int] = ids.tolist()  # type: ignore[assignment]
    values: list[float] = logprobs[ids].tolist()
    pairs = list(zip(id_list, values, strict=True))
    pairs.sort(key=lambda pair: -pair[1])
    return pairs
