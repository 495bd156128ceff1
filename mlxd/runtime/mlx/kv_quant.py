"""A quantized KV cache inside the continuous batch, which mlx-lm 0.32 does not have.

mlx-lm quantizes the cache of a sequence decoding alone (``maybe_quantize_kv_cache`` turns
each ``KVCache`` into a ``QuantizedKVCache`` once it holds ``quantized_kv_start`` tokens),
but its ``BatchGenerator`` keeps ``BatchKVCache`` layers, which hold full-precision arrays
only, and a ``QuantizedKVCache`` cannot be merged into a batch at all. This module is the
batch's half of the same rule: ``QuantizingBatchKVCache`` is a ``BatchKVCache`` that holds
full-precision keys and values until the batch holds ``start`` positions (its longest
row, left padding included; at least one), then quantizes them in place and stores every
later token quantized. Attention takes mlx-lm's quantized path for it exactly as for a
``QuantizedKVCache``: mlx-lm checks for a ``bits`` attribute, which this cache has only
once it is quantized.

``kv_layers.for_batch`` wraps a sequence's own layers (``KVCache`` or ``QuantizedKVCache``)
so that ``BatchGenerator`` merges them into this class; the caches it extracts again
(finished sequences, for the prompt cache) are mlx-lm's own classes, so nothing else changes.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import BatchKVCache, QuantizedKVCache, dynamic_roll

from mlxd.runtime.specs import KvSettings

Arrays = tuple[Any, ...]


def _quantize(x: Any, kv: KvSettings) -> Arrays:
    return tuple(mx.quantize(x, group_size=kv.group_size, bits=kv.bits))


def _zeros(batch: int, heads: int, length: int, dim: int, dtype: Any, kv: KvSettings) -> Arrays:
    """Empty quantized storage: packed values, scales and biases."""
    shape = (batch, heads, length)
    return (
        mx.zeros((*shape, dim * kv.bits // 32), dtype=mx.uint32),
        mx.zeros((*shape, dim // kv.group_size), dtype=dtype),
        mx.zeros((*shape, dim // kv.group_size), dtype=dtype),
    )


class QuantizingBatchKVCache(BatchKVCache):  # type: ignore[misc]
    """``BatchKVCache`` that quantizes its keys and values once it holds ``kv.start`` positions."""

    # mlx-lm's attributes, as this class uses them (arrays, or tuples of them once quantized).
    keys: Any
    values: Any
    offset: Any
    left_padding: Any
    _idx: int
    _right_padding: Any

    def __init__(self, left_padding: list[int], kv: KvSettings) -> None:
        super().__init__(left_padding)
        self.kv = kv
        self.quantized = False

    # mlx-lm's attention takes the quantized path for a cache that has ``bits``.
    @property
    def bits(self) -> int:
        if not self.quantized:
            raise AttributeError("bits")
        return self.kv.bits

    @property
    def group_size(self) -> int:
        if not self.quantized:
            raise AttributeError("group_size")
        return self.kv.group_size

    @classmethod
    def merge(cls, caches: list[Any]) -> QuantizingBatchKVCache:
        """One batch from sequences' layers (full precision, quantized, or a mix)."""
        kv: KvSettings = caches[0].kv
        lengths = [int(c.offset) for c in caches]
        longest = max(lengths)
        if longest == 0:
            return cls([0] * len(caches), kv)
        if not any(isinstance(c, QuantizedKVCache) for c in caches) and longest < kv.start:
            return cls._adopt(BatchKVCache.merge(caches), kv)
        rows = [
            c if isinstance(c, QuantizedKVCache) else c.to_quantized(kv.group_size, kv.bits) for c in caches
        ]
        padding = [longest - n for n in lengths]
        first = next(r for r in rows if r.keys is not None)
        batch, heads = len(rows), first.keys[0].shape[1]

        def storage(part: int) -> Arrays:
            arrays = first.keys if part == 0 else first.values
            out = tuple(mx.zeros((batch, heads, longest, a.shape[-1]), dtype=a.dtype) for a in arrays)
            for i, (pad, row) in enumerate(zip(padding, rows, strict=True)):
                if row.keys is None:
                    continue
                source = row.keys if part == 0 else row.values
                for target, array in zip(out, source, strict=True):
                    target[i : i + 1, :, pad : pad + row.offset] = array[..., : row.offset, :]
            return out

        cache = cls(padding, kv)
        cache.keys, cache.values = storage(0), storage(1)
        cache.offset = cache.offset + longest
        cache._idx = longest
        cache.quantized = True
        return cache

    @classmethod
    def _adopt(cls, base: BatchKVCache, kv: KvSettings) -> QuantizingBatchKVCache:
        cache = cls.__new__(cls)
        cache.__dict__.update(vars(base))
        cache.kv = kv
        cache.quantized = False
        return cache

    def quantize(self) -> None:
        """From now on keys and values are stored quantized (the ones held so far too)."""
        if self.quantized:
            return
        if self.keys is not None:
            self.keys, self.values = _quantize(self.keys, self.kv), _quantize(self.values, self.kv)
        self.quantized = True

    def update_and_fetch(self, keys: Any, values: Any) -> Any:
        if not self.quantized and self._idx >= max(self.kv.start, 1):
            self.quantize()
        if not self.quantized:
            return super().update_and_fetch(keys, values)
        prev, count = self._idx, keys.shape[2]
        if self.keys is None or prev + count > self.keys[0].shape[2]:
            batch, heads, _, k_dim = keys.shape
            length = (self.step + count - 1) // self.step * self.step
            new_k = _zeros(batch, heads, length, k_dim, keys.dtype, self.kv)
            new_v = _zeros(batch, heads, length, values.shape[3], values.dtype, self.kv)
            if self.keys is None:
                self.keys, self.values = new_k, new_v
            else:
                self.keys = tuple(
                    mx.concatenate([a[..., :prev, :], b], axis=2)
                    for a, b in zip(self.keys, new_k, strict=True)
                )
                self.values = tuple(
                    mx.concatenate([a[..., :prev, :], b], axis=2)
                    for a, b in zip(self.values, new_v, strict=True)
                )
        self.offset = self.offset + count
        self._idx += count
        for store, new in ((self.keys, _quantize(keys, self.kv)), (self.values, _quantize(values, self.kv))):
            for target, array in zip(store, new, strict=True):
                target[..., prev : self._idx, :] = array
        return self.keys_and_values()

    def keys_and_values(self) -> Any:
        if not self.quantized:
            return super().keys_and_values()
        idx = self._idx
        return tuple(a[..., :idx, :] for a in self.keys), tuple(a[..., :idx, :] for a in self.values)

    def finalize(self) -> None:
        if not self.quantized or self._right_padding is None:
            super().finalize()
            return
        padding = self._right_padding
        self.keys = tuple(dynamic_roll(a, padding[:, None], axis=2) for a in self.keys)
        self.values = tuple(dynamic_roll(a, padding[:, None], axis=2) for a in self.values)
        self.offset = self.offset - padding
        self.left_padding += padding
        self._right_padding = None

    def filter(self, batch_indices: Any) -> None:
        if not self.quantized:
            super().filter(batch_indices)
            return
        if self.keys is not None:
            self.keys = tuple(a[batch_indices] for a in self.keys)
            self.values = tuple(a[batch_indices] for a in self.values)
        self.offset = self.offset[batch_indices]
        self.left_padding = self.left_padding[batch_indices]
        shift = min(self.left_padding.tolist())
        if shift > 0:
            if self.keys is not None:
                self.keys = tuple(a[..., shift:, :] for a in self.keys)
                self.values = tuple(a[..., shift:, :] for a in self.values)
            self._idx -= shift
            self.left_padding -= shift

    def extend(self, other: Any) -> None:
        if not (self.quantized or other.quantized):
            super().extend(other)
            return
        self.quantize()
        other.quantize()
        if self.keys is None and other.keys is None:
            self.left_padding = mx.concatenate([self.left_padding, other.left_padding])
            self.offset = mx.concatenate([self.offset, other.offset])
            return
        longest = max(self._idx, other._idx)
        size = max(c.keys[0].shape[2] for c in (self, other) if c.keys is not None)
        template = self if self.keys is not None else other

        def padded(c: QuantizingBatchKVCache) -> tuple[Arrays, Arrays, Any]:
            """A cache's arrays right-justified at ``longest``, all ``size`` long."""
            rows = c.offset.shape[0]
            if c.keys is None:
                empty = [
                    tuple(mx.zeros((rows, *a.shape[1:2], 0, a.shape[3]), dtype=a.dtype) for a in part)
                    for part in (template.keys, template.values)
                ]
                keys, values = empty[0], empty[1]
            else:
                keys, values = c.keys, c.values
            left = longest - c._idx
            right = size - keys[0].shape[2] - left
            parts = []
            for part in (keys, values):
                if right < 0:
                    part = tuple(a[..., :right, :] for a in part)
                if left or right > 0:
                    pad = [(0, 0), (0, 0), (left, max(right, 0)), (0, 0)]
                    part = tuple(mx.pad(a, pad) for a in part)
                parts.append(part)
            return parts[0], parts[1], c.left_padding + left

        (k1, v1, p1), (k2, v2, p2) = padded(self), padded(other)
        self.keys = tuple(mx.concatenate([a, b]) for a, b in zip(k1, k2, strict=True))
        self.values = tuple(mx.concatenate([a, b]) for a, b in zip(v1, v2, strict=True))
        self.offset = mx.concatenate([self.offset, other.offset])
        self.left_padding = mx.concatenate([p1, p2])
        self._idx = longest

    def extract(self, idx: int) -> Any:
        """Row ``idx`` as mlx-lm's own one-sequence cache (quantized once the batch is)."""
        if not self.quantized:
            return super().extract(idx)
        cache = QuantizedKVCache(group_size=self.kv.group_size, bits=self.kv.bits)
        mx.eval(self.left_padding)
        pad = self.left_padding.tolist()[idx]
        cache.keys = tuple(mx.contiguous(a[idx : idx + 1, :, pad : self._idx]) for a in self.keys)
        cache.values = tuple(mx.contiguous(a[idx : idx + 1, :, pad : self._idx]) for a in self.values)
        cache.offset = self._idx - pad
        return cache

    @property
    def nbytes(self) -> int:
        if not self.quantized or self.keys is None:
            return int(super().nbytes)
        return sum(int(a.nbytes) for part in (self.keys, self.values) for a in part)
