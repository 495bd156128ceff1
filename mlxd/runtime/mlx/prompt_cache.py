"""Reuse the KV cache of a shared prompt prefix (multi-turn chats, agents resending history).

Entries are the per-layer caches of finished sequences, keyed by the tokens they hold,
kept in LRU order under a byte budget. A lookup finds the entry sharing the longest
prefix with the new prompt and hands out a trimmed *shallow* copy: trimming only moves
the copy's offset, and ``BatchGenerator`` copies the cache into its batch, so one entry
can serve many requests without being changed.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import mlx.core as mx

#: Entries are bucketed by this many first tokens: a longer shared prefix is found by
#: scanning one bucket.
MIN_REUSE = 16
#: A prompt that shares less with every entry of its bucket still reuses a shorter common
#: opening (a chat template's first turn markers, a short system prompt) from the latest
#: entry that starts with the same ``SHORT_REUSE`` tokens. Shorter openings are not worth it.
SHORT_REUSE = 4
#: Shorter sequences cut out of a batch are not kept: re-running them costs less than
#: copying every one-shot prompt's KV out of the batch (it showed in the per-request
#: profile). A sequence that decoded alone owns its arrays and is kept from ``MIN_REUSE``.
MIN_STORE = 64


def _nbytes(layers: list[Any]) -> int:
    return sum(int(layer.nbytes) for layer in layers)


def _common_prefix(a: tuple[int, ...], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PromptCache:
    """An LRU of KV caches keyed by token sequences, bounded by ``max_bytes`` and ``max_entries``.

    Entries are bucketed by their first ``MIN_REUSE`` tokens, so finding a long shared
    prefix scans one bucket, not every entry; for a shorter one, the latest entry with
    the same first ``SHORT_REUSE`` tokens is the candidate.
    """

    def __init__(self, max_bytes: int, max_entries: int = 1024) -> None:
        #: How an entry's bytes are counted (a distributed daemon counts the same on every rank).
        self.measure: Callable[[list[Any]], int] = _nbytes
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self.hits = 0
        self._entries: OrderedDict[tuple[int, ...], tuple[list[Any], int]] = OrderedDict()
        self._buckets: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
        self._latest: dict[tuple[int, ...], tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: list[int]) -> tuple[list[Any] | None, int]:
        """A cache covering the longest reusable prefix of ``tokens`` and its length."""
        best_key: tuple[int, ...] | None = None
        best = 0
        for key in self._buckets.get(tuple(tokens[:MIN_REUSE]), ()):
            shared = _common_prefix(key, tokens)
            if shared > best:
                best_key, best = key, shared
        if best < MIN_REUSE:
            latest = self._latest.get(tuple(tokens[:SHORT_REUSE]))
            shared = _common_prefix(latest, tokens) if latest is not None else 0
            if shared > best:
                best_key, best = latest, shared
        reuse = min(best, len(tokens) - 1)  # at least one token must go through the model
        if best_key is None or reuse < SHORT_REUSE:
            return None, 0
        layers, _ = self._entries[best_key]
        trim = len(best_key) - reuse
        if trim and not all(layer.is_trimmable() for layer in layers):
            return None, 0
        copies = [copy.copy(layer) for layer in layers]
        if trim:
            for layer in copies:
                layer.trim(trim)
        self._entries.move_to_end(best_key)
        self.hits += 1
        return copies, reuse

    def store(self, tokens: list[int], layers: list[Any], *, min_tokens: int = MIN_STORE) -> None:
        """Keep the cache of a finished sequence; entries it extends are dropped."""
        if self.max_bytes <= 0 or len(tokens) < max(min_tokens, MIN_REUSE):
            return
        # A cache extracted from a batch is a lazy slice that keeps the whole batch's KV
        # buffer alive until it is evaluated: materialise it so only its own bytes stay.
        mx.eval([layer.state for layer in layers])
        size = self.measure(layers)
        if size > self.max_bytes:
            return
        key = tuple(tokens)
        bucket = self._buckets.setdefault(key[:MIN_REUSE], set())
        for old in [k for k in bucket if len(k) <= len(key) and key[: len(k)] == k]:
            self._drop(old)
        self._entries[key] = (layers, size)
        self._buckets.setdefault(key[:MIN_REUSE], set()).add(key)
        self._latest[key[:SHORT_REUSE]] = key
        self.bytes += size
        self._evict()

    def resize(self, max_bytes: int) -> None:
        """A new byte budget (a config edit); a smaller one evicts the oldest entries now."""
        self.max_bytes = max_bytes
        self._evict()

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._buckets.clear()
        self._latest.clear()
        self.bytes = 0

    def _evict(self) -> None:
        while (self.bytes > self.max_bytes or len(self._entries) > self.max_entries) and self._entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[int, ...]) -> None:
        _, size = self._entries.pop(key)
        self.bytes -= size
        if self._latest.get(key[:SHORT_REUSE]) == key:
            del self._latest[key[:SHORT_REUSE]]
        bucket = self._buckets.get(key[:MIN_REUSE])
        if bucket is not None:
            bucket.discard(key)
            if not bucket:
                del self._buckets[key[:MIN_REUSE]]
