"""One sequence decoding alone: mlx-lm's plain ``generate_step`` loop instead of a batch.

A batch of one still pays for the batch machinery at every step (a left-padding mask,
per-row offsets, per-row bookkeeping): about a tenth of a small model's decode speed. A
lone request, the common case on a laptop, decodes here instead, one pipelined step per
call. When another request for the same model arrives, the worker moves the sequence
into the batch with ``detach``, without losing or recomputing a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import KVCache, QuantizedKVCache

from mlxd.runtime.mlx.kv_layers import quantize_solo
from mlxd.runtime.mlx.sampling import LogitsProcessor, Sampler, for_one_row
from mlxd.runtime.specs import KvSettings


@dataclass(slots=True)
class SoloResponse:
    """One generated token, shaped like mlx-lm's batch responses."""

    token: int
    logprobs: Any
    finish_reason: str | None


@dataclass(slots=True)
class Detached:
    """What the batch needs to go on: the unfed prompt, the cache and its tokens."""

    prompt: list[int]
    #: ``None`` when nothing was fed yet (the batch makes its own).
    cache: list[Any] | None
    all_tokens: list[int]
    max_tokens: int


def private_cache(layers: list[Any], length: int) -> list[Any] | None:
    """Fresh key-value layers holding the first ``length`` positions of ``layers``.

    Writes into a cache update its arrays in place, so a sequence never decodes into a
    prompt-cache entry's own arrays. ``None`` when a layer is not a plain (or quantized)
    KV cache.
    """
    out: list[Any] = []
    for layer in layers:
        if layer.keys is None:
            return None
        fresh: Any
        if type(layer) is KVCache:
            fresh = KVCache()
            fresh.keys = layer.keys[..., :length, :]
            fresh.values = layer.values[..., :length, :]
        elif type(layer) is QuantizedKVCache:
            fresh = QuantizedKVCache(group_size=layer.group_size, bits=layer.bits)
            fresh.keys = tuple(a[..., :length, :] for a in layer.keys)
            fresh.values = tuple(a[..., :length, :] for a in layer.values)
        else:
            return None
        fresh.offset = length
        out.append(fresh)
    return out


def prefill(model: Any, tokens: list[int], layers: list[Any], step: int) -> list[Any]:
    """Run ``tokens`` through ``model`` into ``layers``, ``step`` tokens at a time (the
    shared prefill of ``n`` choices, before the batch copies the cache for each)."""
    for start in range(0, len(tokens), step):
        model(mx.array(tokens[start : start + step])[None], cache=layers)
        mx.eval([layer.state for layer in layers])
    return layers


class SoloDecoder:
    """Prefill in chunks, then decode one token per ``step``, the next step in flight."""

    def __init__(
        self,
        model: Any,
        prompt: list[int],
        cache: list[Any],
        cached_tokens: list[int],
        *,
        sampler: Sampler,
        processors: list[LogitsProcessor],
        max_tokens: int,
        stop_tokens: frozenset[int],
        prefill_step_size: int,
        stream: Any,
        kv: KvSettings | None = None,
    ) -> None:
        self.model = model
        self.cache = cache
        #: Tokens whose keys and values are in the cache.
        self.fed = list(cached_tokens)
        self._unfed = list(prompt)
        #: The batch's kind of sampler, handed over by ``detach``.
        self.sampler = sampler
        self._sample = for_one_row(sampler)
        self.processors = processors
        self._max_tokens = max_tokens
        self.stop_tokens = stop_tokens
        self._prefill_step_size = prefill_step_size
        self._stream = stream
        self._context: Any = mx.array(self.fed) if processors and self.fed else None
        self._inflight: tuple[Any, Any] | None = None
        self.generated = 0
        self._kv = kv

    def step(self) -> SoloResponse | None:
        """A prefill chunk (``None``), or the next token with the step after it started."""
        with mx.stream(self._stream):
            if len(self._unfed) > 1:
                self._prefill_chunk()
                return None
            if self._inflight is None:
                last, self._unfed = self._unfed, []
                self.fed.extend(last)
                self._inflight = self._forward(mx.array(last))
            return self._take(self._inflight, ahead=True)

    def detach(self) -> tuple[SoloResponse | None, Detached | None]:
        """Stop decoding here: the token in flight (if any) and the state for a batch.

        The token in flight was already sampled (a seeded sampler has advanced past it),
        so it is returned to be delivered rather than recomputed; ``Detached`` is ``None``
        when that token ends the sequence.
        """
        response = None
        if self._inflight is not None:
            with mx.stream(self._stream):
                response = self._take(self._inflight, ahead=False)
            if response.finish_reason is not None:
                return response, None
            self._unfed = [response.token]
        remaining = self._max_tokens - self.generated
        cache = self.cache if self.fed else None
        return response, Detached(self._unfed, cache, self.fed, remaining)

    def cache_state(self) -> tuple[list[int], list[Any]]:
        """The tokens whose keys and values the cache holds (or will, once evaluated), and it."""
        return self.fed, self.cache

    def _take(self, inflight: tuple[Any, Any], *, ahead: bool) -> SoloResponse:
        token_array, logprobs = inflight
        self._inflight = None
        self.generated += 1
        last = self.generated >= self._max_tokens
        if ahead and not last:
            # Queue the next step on the sampled token while it is still being computed, so
            # MLX goes on without waiting for Python (as generate_step does). When this token
            # turns out to be a stop token, that step is wasted, never delivered.
            self._inflight = self._forward(token_array)
        token = int(token_array.item())
        if self._inflight is not None:
            self.fed.append(token)
        finish = None
        if token in self.stop_tokens:
            finish = "stop"
        elif last:
            finish = "length"
        return SoloResponse(token, logprobs, finish)

    def _prefill_chunk(self) -> None:
        count = min(self._prefill_step_size, len(self._unfed) - 1)
        chunk, self._unfed = self._unfed[:count], self._unfed[count:]
        inputs = mx.array(chunk)
        if self._kv is not None:
            quantize_solo(self.cache, self._kv)
        self.model(inputs[None], cache=self.cache)
        mx.eval([layer.state for layer in self.cache])
        self.fed.extend(chunk)
        if self.processors:
            self._context = inputs if self._context is None else mx.concatenate([self._context, inputs])

    def _forward(self, inputs: Any) -> tuple[Any, Any]:
        """Queue one decode step on ``inputs`` (a 1-D array of token ids, maybe not computed yet)."""
        if self._kv is not None:
            quantize_solo(self.cache, self._kv)
        logits = self.model(inputs[None], cache=self.cache)[:, -1, :]
        if self.processors:
            self._context = inputs if self._context is None else mx.concatenate([self._context, inputs])
            for processor in self.processors:
                logits = processor(self._context, logits)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        sampled = self._sample(logprobs)
        pair = (sampled, logprobs.squeeze(0))
        mx.async_eval(*pair)  # type: ignore[no-untyped-call]
        return pair
