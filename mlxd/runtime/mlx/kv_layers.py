"""A sequence's own KV layers under the quantized-KV rule (``kv_bits``): quantized in
place when it decodes alone, as mlx-lm does, or wrapped so that ``BatchGenerator`` merges
them into a ``QuantizingBatchKVCache`` (``kv_quant``) when it joins the batch."""

from __future__ import annotations

from typing import Any

from mlx_lm.models.cache import KVCache, QuantizedKVCache

from mlxd.runtime.mlx.kv_quant import QuantizingBatchKVCache
from mlxd.runtime.specs import KvSettings


class _SeqKV(KVCache):  # type: ignore[misc]
    """A sequence's full-precision layer whose batch is a ``QuantizingBatchKVCache``."""

    kv: KvSettings

    @classmethod
    def merge(cls, caches: list[Any]) -> QuantizingBatchKVCache:
        return QuantizingBatchKVCache.merge(caches)


class _SeqQuantizedKV(QuantizedKVCache):  # type: ignore[misc]
    """A sequence's quantized layer whose batch is a ``QuantizingBatchKVCache``."""

    kv: KvSettings

    @classmethod
    def merge(cls, caches: list[Any]) -> QuantizingBatchKVCache:
        return QuantizingBatchKVCache.merge(caches)


def for_batch(layers: list[Any], kv: KvSettings) -> list[Any]:
    """A sequence's layers as ``BatchGenerator`` must get them for a quantizing batch.

    The arrays are shared, not copied (merging into the batch copies them); layers that
    are not key-value caches (sliding windows, recurrent state) pass unchanged.
    """
    out: list[Any] = []
    for layer in layers:
        wrapped: Any
        if type(layer) is KVCache or type(layer) is _SeqKV:
            wrapped = _SeqKV()
        elif type(layer) is QuantizedKVCache or type(layer) is _SeqQuantizedKV:
            wrapped = _SeqQuantizedKV(group_size=layer.group_size, bits=layer.bits)
        else:
            out.append(layer)
            continue
        wrapped.keys, wrapped.values, wrapped.offset = layer.keys, layer.values, layer.offset
        wrapped.kv = kv
        out.append(wrapped)
    return out


def quantize_solo(layers: list[Any], kv: KvSettings) -> None:
    """mlx-lm's rule for one sequence, applied before a forward pass (mlx-lm applies it
    after the previous one: the same thing): layers holding tokens, at least ``kv.start``
    of them, become ``QuantizedKVCache`` (in place in the list)."""
    for i, layer in enumerate(layers):
        if type(layer) is KVCache and layer.offset >= max(kv.start, 1):
            layers[i] = layer.to_quantized(group_size=kv.group_size, bits=kv.bits)
