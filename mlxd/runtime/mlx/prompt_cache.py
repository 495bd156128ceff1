"""Reuse the KV cache of a shared prompt prefix (multi-turn chats, agents resending history).

Entries are the per-layer caches of finished sequences, keyed by the tokens they hold,
kept in LRU order under a byte budget (``PrefixIndex`` finds the entry sharing the longest
prefix with a new prompt). A lookup hands out a trimmed *shallow* copy: trimming only
moves the copy's offset, and ``BatchGenerator`` copies the cache into its batch, so one
entry can serve many requests without being changed. With a disk tier, long entries are
also written to disk, and a prompt that finds more on disk than in memory reads it back;
the disk is a tier behind memory, so a zero memory budget turns both off.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

import mlx.core as mx

from mlxd.runtime.prefix_index import MIN_REUSE, SHORT_REUSE, PrefixIndex, common_prefix

__all__ = ["MIN_REUSE", "MIN_STORE", "SHORT_REUSE", "DiskTier", "PromptCache"]

#: Shorter sequences cut out of a batch are not kept: re-running them costs less than
#: copying every one-shot prompt's KV out of the batch (it showed in the per-request
#: profile). A sequence that decoded alone owns its arrays and is kept from ``MIN_REUSE``.
MIN_STORE = 64


def _nbytes(layers: list[Any]) -> int:
    return sum(int(layer.nbytes) for layer in layers)


class DiskTier(Protocol):
    """Where a model's long prefixes also go: files that outlive the process."""

    def offer(self, tokens: list[int], layers: list[Any]) -> None:
        """Keep a finished sequence's evaluated cache on disk (written off the worker)."""
        ...

    def load(self, tokens: list[int], better_than: int) -> tuple[list[Any], list[int]] | None:
        """The cache of a file sharing more than ``better_than`` first tokens with
        ``tokens``, and the tokens it holds; ``None`` when there is none."""
        ...


class PromptCache:
    """An LRU of KV caches keyed by token sequences, bounded by ``max_bytes`` and ``max_entries``."""

    def __init__(self, max_bytes: int, max_entries: int = 1024, disk: DiskTier | None = None) -> None:
        #: How an entry's bytes are counted (a distributed daemon counts the same on every rank).
        self.measure: Callable[[list[Any]], int] = _nbytes
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.hits = 0
        #: Hits served from disk.
        self.disk_hits = 0
        self.disk = disk
        self._index: PrefixIndex[list[Any]] = PrefixIndex()
        #: Finished sequences' caches (and ``min_tokens``) waiting for ``store_pending``.
        self._later: list[tuple[list[int], list[Any], int]] = []

    def __len__(self) -> int:
        return len(self._index)

    @property
    def bytes(self) -> int:
        """Memory the entries take."""
        return self._index.bytes

    def lookup(self, tokens: list[int]) -> tuple[list[Any] | None, int]:
        """A cache covering the longest reusable prefix of ``tokens`` and its length."""
        if self._later:  # a request started in the pass another one finished in finds it
            self.store_pending()
        key, best = self._index.find(tokens)
        layers = self._index.get(key) if key is not None else None
        if self.disk is not None and self.max_bytes > 0 and len(tokens) - 1 > best:
            found = self.disk.load(tokens, better_than=best)
            if found is not None:
                layers, held = found
                key = tuple(held)
                best = common_prefix(held, tokens)
                self.disk_hits += 1
                self._keep(held, layers)
        reuse = min(best, len(tokens) - 1)  # at least one token must go through the model
        if key is None or layers is None or reuse < SHORT_REUSE:
            return None, 0
        trim = len(key) - reuse
        if trim and not all(layer.is_trimmable() for layer in layers):
            return None, 0
        copies = [copy.copy(layer) for layer in layers]
        if trim:
            for layer in copies:
                layer.trim(trim)
        if key in self._index:
            self._index.touch(key)
        self.hits += 1
        return copies, reuse

    def store(self, tokens: list[int], layers: list[Any], *, min_tokens: int = MIN_STORE) -> None:
        """Keep the cache of a finished sequence; entries it extends are dropped."""
        self._store_all([(tokens, layers, min_tokens)])

    def store_later(self, tokens: list[int], layers: list[Any], *, min_tokens: int = MIN_STORE) -> None:
        """``store``, when ``store_pending`` runs: the worker calls it once the pass's events
        went out, so a finished sequence's last event does not wait for its cache to be
        materialised (which waits for the decode step in flight)."""
        self._later.append((tokens, layers, min_tokens))

    def store_pending(self) -> None:
        """Store what ``store_later`` was given."""
        later, self._later = self._later, []
        self._store_all(later)

    def _store_all(self, finished: list[tuple[list[int], list[Any], int]]) -> None:
        if self.max_bytes <= 0:
            return
        kept = [
            (tokens, layers) for tokens, layers, least in finished if len(tokens) >= max(least, MIN_REUSE)
        ]
        if not kept:  # the worker asks after every pass; most passes finished nothing
            return
        # A cache extracted from a batch is a lazy slice that keeps the whole batch's KV
        # buffer alive until it is evaluated: materialise it so only its own bytes stay.
        # One evaluation for all: a batch's rows finishing together each waited on the
        # device before (64 rows of a 1B model on an H100: 35-46 ms, now 14-18 ms).
        mx.eval([layer.state for _, layers in kept for layer in layers])
        for tokens, layers in kept:
            if self.disk is not None:
                self.disk.offer(tokens, layers)
            self._keep(tokens, layers)

    def _keep(self, tokens: list[int], layers: list[Any]) -> None:
        size = self.measure(layers)
        if size > self.max_bytes:
            return
        self._index.add(tuple(tokens), layers, size)
        self._evict()

    def resize(self, max_bytes: int) -> None:
        """A new byte budget (a config edit); a smaller one evicts the oldest entries now."""
        self.max_bytes = max_bytes
        self._evict()

    def clear(self) -> None:
        """Forget every entry."""
        self._later.clear()
        self._index.clear()

    def _evict(self) -> None:
        index = self._index
        while (index.bytes > self.max_bytes or len(index) > self.max_entries) and len(index):
            oldest = index.oldest()
            assert oldest is not None
            index.drop(oldest)
