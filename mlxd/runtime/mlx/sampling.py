"""Samplers, logits processors and logprob extraction built from ``SamplingParams``.

Rows of a batch that share a sampler object sample in one batched call, so unseeded
requests with equal parameters get the same object (``shared_sampler``); a seeded one owns
its random key, XTC's coin included, so its tokens do not depend on its neighbours.
"""

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
def shared_sampler(
    temperature: float,
    top_p: float,
    top_k: int,
    min_p: float,
    xtc_probability: float = 0.0,
    xtc_threshold: float = 0.1,
    xtc_special: tuple[int, ...] = (),
) -> Sampler:
    """One sampler object per parameter set, so equal rows sample in one batched call."""
    return mlx_make_sampler(  # type: ignore[no-any-return]
        temp=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        xtc_probability=xtc_probability,
        xtc_threshold=xtc_threshold,
        xtc_special_tokens=list(xtc_special),
    )


def _keyed_xtc(logprobs: Any, probability: float, threshold: float, special: list[int], key: Any) -> Any:
    """mlx-lm's ``apply_xtc`` with the coin drawn from ``key`` instead of the global state:
    drop every token more likely than ``threshold`` but the least likely of them."""
    probs = mx.softmax(logprobs, -1)
    mask = probs > mx.where(probs > threshold, probs, mx.inf).min(axis=-1, keepdims=True)
    if special:
        mask[..., special] = False
    excluded = mx.where(mask, -mx.inf, logprobs)
    return mx.where(mx.random.uniform(0, 1, key=key) > probability, logprobs, excluded)


def _seeded_sampler(params: SamplingParams, seed: int, xtc_special: tuple[int, ...]) -> Sampler:
    """A sampler with its own random key: the same seed gives the same tokens in any batch.

    The filters run in mlx-lm's order (top-p, min-p, XTC, top-k)."""
    key = mx.random.key(seed % 2**64)
    filters: list[Callable[[Any, Any], Any]] = []
    if 0 < params.top_p < 1.0:
        filters.append(lambda x, _: apply_top_p(x, params.top_p))
    if params.min_p > 0:
        filters.append(lambda x, _: apply_min_p(x, params.min_p))
    if params.xtc_probability > 0:
        special = list(xtc_special)
        filters.append(lambda x, k: _keyed_xtc(x, params.xtc_probability, params.xtc_threshold, special, k))
    if params.top_k > 0:
        filters.append(lambda x, _: apply_top_k(x, params.top_k))
    inverse_temperature = 1.0 / params.temperature
    coins = params.xtc_probability > 0

    def sample(logprobs: Any) -> Any:
        nonlocal key
        # Without XTC the key advances as it always did: a seed gives the tokens it gave.
        key, step, *coin = mx.random.split(key, 3 if coins else 2)
        for apply in filters:
            logprobs = apply(logprobs, coin[0] if coin else None)
        return mx.random.categorical(logprobs * inverse_temperature, key=step)

    return sample


def make_sampler(params: SamplingParams, xtc_special: tuple[int, ...] = ()) -> Sampler:
    """The sampler for one sequence: shared when unseeded or greedy, private when seeded.

    ``xtc_special``: the model's tokens XTC never drops (a newline and the EOS tokens, as
    ``mlx_lm.server`` has it)."""
    if params.seed is not None and params.temperature > 0:
        return _seeded_sampler(params, params.seed, xtc_special)
    return shared_sampler(*params.sampler_key, xtc_special if params.xtc_probability > 0 else ())


def xtc_special_tokens(tokenizer: Any) -> tuple[int, ...]:
    """The tokens XTC leaves alone: a newline and the end-of-sequence tokens."""
    return tuple(dict.fromkeys([*tokenizer.encode("\n", add_special_tokens=False), *tokenizer.eos_token_ids]))


def make_processors(params: SamplingParams) -> list[LogitsProcessor]:
    """Penalties and logit bias, as mlx-lm logits processors (empty when none apply); the
    presence and frequency penalties look back over their own windows."""
    return make_logits_processors(  # type: ignore[no-any-return]
        logit_bias=dict(params.logit_bias) or None,
        repetition_penalty=params.repetition_penalty if params.repetition_penalty != 1.0 else None,
        repetition_context_size=params.repetition_context_size,
        presence_penalty=params.presence_penalty or None,
        presence_context_size=params.presence_context_size,
        frequency_penalty=params.frequency_penalty or None,
        frequency_context_size=params.frequency_context_size,
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
