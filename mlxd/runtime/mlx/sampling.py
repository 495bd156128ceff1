"""Samplers, logits processors and logprob extraction built from ``SamplingParams``.

The samplers are plain MLX operations, deliberately not ``mx.compile``d: a compiled
function is traced again for every new input shape and every new constant, and a
continuous batch changes its row count at almost every admission. On a GPU each new
trace cost a request seconds of time to first token (measured with ``python -m
bench.probe``).

A lone sequence is different: its row has one shape per model, and it samples at every
step of a decode whose time is mostly the host's (a small model on a GPU, any model on
the CPU). There the draw itself (about ten operations: the random bits, two logarithms,
the argmax) is compiled into one fused pass, with the temperature as an input so no
request traces it again (``for_one_row``); the warm-up traces it at load. It draws the
very tokens the plain operations draw from the same random state.

Rows of a batch that share a sampler object sample in one batched call, so unseeded
requests with equal parameters get the same object (``shared_sampler``); a seeded one owns
its random key, XTC's coin included, so its tokens do not depend on its neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import mlx.core as mx
from mlx_lm.sample_utils import make_logits_processors

from mlxd.runtime.requests import SamplingParams

Sampler = Callable[[Any], Any]
LogitsProcessor = Callable[[Any, Any], Any]
Filter = Callable[[Any], Any]
KeyedFilter = Callable[[Any, Any], Any]


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


def _greedy(logprobs: Any) -> Any:
    return mx.argmax(logprobs, axis=-1)


def xtc_filter(probability: float, threshold: float, special: tuple[int, ...]) -> KeyedFilter:
    """XTC ("exclude top choices"): with ``probability``, drop every token more likely than
    ``threshold`` but the least likely of them; ``special`` tokens are never dropped. The coin
    comes from ``key`` when the sampler owns one, else from MLX's global random state."""
    ids = list(special)

    def apply(logprobs: Any, key: Any) -> Any:
        probs = mx.softmax(logprobs, -1)
        mask = probs > mx.where(probs > threshold, probs, mx.inf).min(axis=-1, keepdims=True)
        if ids:
            mask[..., ids] = False
        excluded = mx.where(mask, -mx.inf, logprobs)
        # A coin per row: rows sharing this sampler are different requests.
        coin = (
            mx.random.uniform(0, 1, key=key)
            if key is not None
            else mx.random.uniform(0, 1, (len(logprobs), 1))
        )
        return mx.where(coin > probability, logprobs, excluded)

    return apply


def _keyed(params: SamplingParams, special: tuple[int, ...]) -> list[KeyedFilter]:
    """The filters of a sampler, in mlx-lm's order (top-p, min-p, XTC, top-k); each takes the
    row's logprobs and a key for XTC's coin (``None``: the global random state)."""

    def plain(apply: Filter) -> KeyedFilter:
        return lambda logprobs, _: apply(logprobs)

    filters: list[KeyedFilter] = []
    if 0 < params.top_p < 1.0:
        filters.append(plain(top_p_filter(params.top_p)))
    if params.min_p > 0:
        filters.append(plain(min_p_filter(params.min_p)))
    if params.xtc_probability > 0:
        filters.append(xtc_filter(params.xtc_probability, params.xtc_threshold, special))
    if params.top_k > 0:
        filters.append(plain(top_k_filter(params.top_k)))
    return filters


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
    if temperature == 0:
        return _greedy
    params = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        xtc_probability=xtc_probability,
        xtc_threshold=xtc_threshold,
    )
    return Categorical(_keyed(params, xtc_special), 1.0 / temperature)


def _draw(logprobs: Any, scale: Any) -> Any:
    return mx.random.categorical(logprobs * scale)


def _traced_draw(logprobs: Any, scale: Any) -> Any:
    """What ``mx.compile`` traces: it runs once per shape, data type and MLX stream (``_draw``
    is looked up at each trace, which lets the tests count them)."""
    return _draw(logprobs, scale)


#: ``_draw`` compiled, for one row at a time: on the CPU backend it took 75 µs a call where
#: the plain operations took 130 µs, and one stream of a tiny model decoded 8% faster.
_one_row_draw = mx.compile(_traced_draw, inputs=mx.random.state, outputs=mx.random.state)


class Categorical:
    """An unseeded sampler: its filters, then a draw at its temperature from MLX's global
    random state (rows that share one sample in one batched call)."""

    __slots__ = ("_filters", "_scale", "_scales")

    def __init__(self, filters: list[KeyedFilter], scale: float) -> None:
        self._filters = filters
        self._scale = scale
        #: The scale as an array of each data type it met (the compiled draw's input).
        self._scales: dict[Any, Any] = {}

    def __call__(self, logprobs: Any) -> Any:
        return _draw(self._filtered(logprobs), self._scale)

    def one_row(self, logprobs: Any) -> Any:
        """The same draw for a lone sequence's row, compiled (``for_one_row``)."""
        logprobs = self._filtered(logprobs)
        scale = self._scales.get(logprobs.dtype)
        if scale is None:
            scale = self._scales[logprobs.dtype] = mx.array(self._scale, dtype=logprobs.dtype)
        return _one_row_draw(logprobs, scale)

    def _filtered(self, logprobs: Any) -> Any:
        for apply in self._filters:
            logprobs = apply(logprobs, None)
        return logprobs


def for_one_row(sampler: Sampler) -> Sampler:
    """What a lone sequence samples with: an unseeded sampler's compiled draw (one shape per
    model, traced once), else ``sampler`` itself (greedy is one operation; a seeded draw
    stays plain so that its tokens never depend on which path drew them)."""
    return sampler.one_row if isinstance(sampler, Categorical) else sampler


def _seeded_sampler(params: SamplingParams, seed: int, xtc_special: tuple[int, ...]) -> Sampler:
    """A sampler with its own random key: the same seed gives the same tokens in any batch."""
    key = mx.random.key(seed % 2**64)
    filters = _keyed(params, xtc_special)
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
