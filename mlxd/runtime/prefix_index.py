"""Entries keyed by token sequences, found by the longest prefix they share with a prompt.

The one lookup mechanism behind both prompt caches: the KV caches in memory
(``mlx/prompt_cache.py``) and the files on disk (``mlx/prompt_disk.py``). Entries are kept
in least-recently-used order and bucketed by their first ``MIN_REUSE`` tokens, so a long
shared prefix is found by scanning one bucket, not every entry; for a shorter one, the
latest entry with the same first ``SHORT_REUSE`` tokens is the candidate. Pure Python.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

V = TypeVar("V")
Key = tuple[int, ...]

#: Entries are bucketed by this many first tokens: a longer shared prefix is found by
#: scanning one bucket.
MIN_REUSE = 16
#: A prompt that shares less with every entry of its bucket still reuses a shorter common
#: opening (a chat template's first turn markers, a short system prompt) from the latest
#: entry that starts with the same ``SHORT_REUSE`` tokens. Shorter openings are not worth it.
SHORT_REUSE = 4


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many first tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixIndex(Generic[V]):
    """Values with a size, keyed by token sequences, oldest first."""

    def __init__(self) -> None:
        self.bytes = 0
        self._entries: OrderedDict[Key, tuple[V, int]] = OrderedDict()
        self._buckets: dict[Key, set[Key]] = {}
        self._latest: dict[Key, Key] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[Key]:
        """Keys, least recently used first."""
        return iter(list(self._entries))

    def find(self, tokens: Sequence[int]) -> tuple[Key | None, int]:
        """The entry sharing the longest prefix with ``tokens`` (at least ``SHORT_REUSE``
        tokens), and how many it shares; ``(None, 0)`` when none does."""
        best_key: Key | None = None
        best = 0
        for key in self._buckets.get(tuple(tokens[:MIN_REUSE]), ()):
            shared = common_prefix(key, tokens)
            if shared > best:
                best_key, best = key, shared
        if best < MIN_REUSE:
            latest = self._latest.get(tuple(tokens[:SHORT_REUSE]))
            shared = common_prefix(latest, tokens) if latest is not None else 0
            if shared > best:
                best_key, best = latest, shared
        if best_key is None or best < SHORT_REUSE:
            return None, 0
        return best_key, best

    def covers(self, tokens: Sequence[int]) -> bool:
        """True when an entry holds ``tokens`` or extends them."""
        n = len(tokens)
        wanted = tuple(tokens)
        return any(len(key) >= n and key[:n] == wanted for key in self._buckets.get(wanted[:MIN_REUSE], ()))

    def get(self, key: Key) -> V:
        """The value of ``key`` (a ``KeyError`` when it is gone)."""
        return self._entries[key][0]

    def touch(self, key: Key) -> None:
        """Mark ``key`` as the most recently used."""
        self._entries.move_to_end(key)

    def add(self, key: Key, value: V, size: int) -> list[V]:
        """Keep ``value`` under ``key``; the entries it extends are dropped and returned."""
        bucket = self._buckets.get(key[:MIN_REUSE], set())
        dropped = [self.drop(old) for old in [k for k in bucket if len(k) <= len(key) and key[: len(k)] == k]]
        self._entries[key] = (value, size)
        self._buckets.setdefault(key[:MIN_REUSE], set()).add(key)
        self._latest[key[:SHORT_REUSE]] = key
        self.bytes += size
        return dropped

    def oldest(self) -> Key | None:
        """The least recently used key, if any."""
        return next(iter(self._entries), None)

    def drop(self, key: Key) -> V:
        """Forget ``key``; returns its value."""
        value, size = self._entries.pop(key)
        self.bytes -= size
        if self._latest.get(key[:SHORT_REUSE]) == key:
            del self._latest[key[:SHORT_REUSE]]
        bucket = self._buckets.get(key[:MIN_REUSE])
        if bucket is not None:
            bucket.discard(key)
            if not bucket:
                del self._buckets[key[:MIN_REUSE]]
        return value

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._buckets.clear()
        self._latest.clear()
        self.bytes = 0
