"""Samplers, logits processors and logprob extraction built from ``SamplingParams``.

The samplers are plain MLX operations, deliberately not ``mx.compile``d: a compiled
function is traced again for every new input shape and every new constant, and a
continuous batch changes its row count at almost every admission. On a GPU each new
trace cost a request seconds of time to first token (measured with ``python -m
bench.probe``), for a fusion of a handful of element-wise operations worth microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import mlx.core as mx
from mlx_lm.sample_utils import make_logits_processors

from mlxd.runtime.engine import SamplingParams

Sampler = Callable[[Any], Any]
LogitsProcessor = Callable[[Any, Any], Any]
Filter = Callable[[Any], Any]


def _keep_at_least(logprobs: Any, threshold: Any) -> Any:
    return mx.where(logprobs >= threshold, logprobs, -mx.inf)


def top_p_filter(top_p: float) -> Filter:
    """Keep the most likely tokens whose probabilities sum to ``top_p`` (nucleus sampling)."""

    def apply(logprobs: Any) -> Any:
        order = mx.argsort(-logprobs, axis=-1)
        ranked = mx.take_along_axis(logprobs, order, axis=-1)
        probs = mx.exp(ranked)
        before = mx.cumsum(probs, axis=-1) - probs  # mass of the more likely tokens
        cutoff = mx.min(mx.where(before < top_p, ranked, mx.inf), axis=-1, keepdims=True)
        return _keep_at_least(logprobs, cutoff)

    return apply


def min_p_filter(min_p: float) -> Filter:
    """Drop tokens less likely than ``min_p`` times the most likely one."""
    scale = math.log(min_p)

    def apply(logprobs: Any) -> Any:
        return _keep_at_least(logprobs, mx.max(logprobs, axis=-1, keepdims=True) + scale)

    return apply


def top_k_filter(top_k: int) -> Filter:
    """Keep the ``top_k`` most likely tokens."""

    def apply(logprobs: Any) -> Any:
        k = min(top_k, logprobs.shape[-1])
        kth = mx.min(mx.topk(logprobs, k, axis=-1), axis=-1, keepdims=True)
        return _keep_at_least(logprobs, kth)

    return apply


def _filters(top_p: float, top_k: int, min_p: float) -> list[Filter]:
    filters: list[Filter] = []
    if 0 < top_p < 1.0:
        filters.append(top_p_filter(top_p))
    if min_p > 0:
        filters.append(min_p_filter(min_p))
    if top_k > 0:
        filters.append(top_k_filter(top_k))
    return filters


def _greedy(logprobs: Any) -> Any:
    return mx.argmax(logprobs, axis=-1)


@lru_cache(maxsize=256)
def shared_sampler(temperature: float, top_p: float, top_k: int, min_p: float) -> Sampler:
    """One sampler object per parameter set, so equal rows sample in one batched call."""
    if temperature == 0:
        return _greedy
    filters = _filters(top_p, top_k, min_p)
    inverse_temperature = 1.0 / temperature

    def sample(logprobs: Any) -> Any:
        for apply in filters:
            logprobs = apply(logprobs)
        return mx.random.categorical(logprobs * inverse_temperature)

    return sample


def _seeded_sampler(params: SamplingParams, seed: int) -> Sampler:
    """A sampler with its own random key: the same seed gives the same tokens in any batch."""
    key = mx.random.key(seed % 2**64)
    filters = _filters(params.top_p, params.top_k, params.min_p)
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
