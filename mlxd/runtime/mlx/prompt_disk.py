"""Long prompt prefixes on disk, so a restart or a model switch does not pay their prefill again.

One directory (``[runtime] prompt_cache_dir``, 0700) of safetensors files written by mlx-lm's
own ``save_prompt_cache`` (0600), each the KV cache of one prefix of at least
``prompt_cache_disk_min_tokens`` tokens. A file is named by a hash of its model's identity
(weights and adapter, as files on disk, and the KV settings) and its tokens; its metadata
holds both, so a file is only ever read back for its own model and prefix. The directory
is bounded in bytes: the least recently used files go first (use is recorded in the
files' modification time, so the order survives a restart).

Threads: the worker offers caches it has already evaluated and reads files back (MLX
arrays are made on the thread that uses them). A writer thread of this module saves the
offered arrays, which are never written in place, scans the directory at start and
deletes what the bound evicts, so no write costs the worker more than a queue put. A
file that cannot be read, is truncated, or belongs to no model of ours is skipped with
one log line and deleted; it never fails a request.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlx_lm.models.cache import save_prompt_cache

from mlxd.runtime.mlx.file_jobs import FileJobs
from mlxd.runtime.mlx.prompt_files import (
    FORMAT,
    TEMP_SUFFIX,
    Signature,
    check_layers,
    digest,
    read_cache,
    reason,
    scan_files,
)
from mlxd.runtime.mlx.prompt_tier import DiskTier
from mlxd.runtime.prefix_index import PrefixIndex

log = logging.getLogger("mlxd.runtime")

#: Writes that may wait for the writer thread at once (each holds a cache's arrays).
MAX_PENDING = 4
#: Longest a read waits for the directory's files to be indexed (after a start or a move).
SCAN_WAIT_S = 5.0


@dataclass(slots=True)
class _File:
    path: Path
    #: When it was last written or read (seconds since the epoch; its mtime).
    used: float


class DiskPromptCache:
    """The prompt-prefix files of every model, under one byte bound (one per worker)."""

    def __init__(self, directory: Path | None, max_bytes: int, min_tokens: int) -> None:
        self.directory: Path | None = None
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self.hits = 0
        self.writes = 0
        self._lock = threading.Lock()
        self._indexes: dict[str, PrefixIndex[_File]] = {}
        self._pending: dict[str, set[tuple[int, ...]]] = {}
        self._jobs = FileJobs("mlxd-prompt-disk")
        #: Set once the current directory's files are indexed (at once: no directory yet).
        self._scanned = threading.Event()
        self._scanned.set()
        self.configure(directory, max_bytes, min_tokens)

    @property
    def enabled(self) -> bool:
        return self.directory is not None and self.max_bytes > 0

    @property
    def bytes(self) -> int:
        with self._lock:
            return sum(index.bytes for index in self._indexes.values())

    def configure(self, directory: Path | None, max_bytes: int, min_tokens: int) -> None:
        """New settings (a config edit): another directory is scanned afresh, a smaller
        bound evicts now."""
        self.max_bytes, self.min_tokens = max_bytes, min_tokens
        if directory != self.directory:
            # Each directory gets its own signal: a scan of the one before, still running,
            # settles its own and never marks this one's files as indexed.
            scanned = threading.Event()
            with self._lock:
                self._indexes.clear()
                self._pending.clear()
                self.directory = directory
                self._scanned = scanned
            if directory is not None and max_bytes > 0:
                self._jobs.submit(lambda: self._scan(directory, scanned))
            else:
                scanned.set()
        elif self.enabled:
            self._jobs.submit(self._evict)

    def scanned(self, timeout: float) -> bool:
        """Wait until the files already in the directory are indexed (False: timed out)."""
        return self._scanned.wait(timeout)

    def tier(self, identity: str, signature: Signature | None) -> DiskTier:
        """The view one model's prompt cache has of the files (``signature``: its cache's shape)."""
        return DiskTier(self, identity, signature)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the writes and deletions queued so far are done (False: timed out)."""
        return self._jobs.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Finish the writes queued so far, then stop the writer thread."""
        self._jobs.close(timeout)

    # -- the worker's side ---------------------------------------------------------------

    def offer(self, identity: str, signature: Signature | None, tokens: list[int], layers: list[Any]) -> None:
        """Queue a finished sequence's evaluated cache for writing, unless a file holds it."""
        directory = self.directory
        if not self.enabled or directory is None or signature is None or len(tokens) < self.min_tokens:
            return
        if check_layers(layers, signature, len(tokens)) is not None:
            return
        key = tuple(tokens)
        with self._lock:
            index = self._indexes.get(identity)
            pending = self._pending.setdefault(identity, set())
            if (index is not None and index.covers(key)) or any(p[: len(key)] == key for p in pending):
                return
            if sum(len(p) for p in self._pending.values()) >= MAX_PENDING:
                return  # the disk is behind: what waits holds memory, so this one is not kept
            pending.add(key)
        path = directory / f"{digest(identity, json.dumps(tokens))[:40]}.safetensors"
        metadata = {"format": FORMAT, "identity": identity, "tokens": json.dumps(tokens)}
        self._jobs.submit(lambda: self._write(identity, key, path, list(layers), metadata))

    def load(
        self, identity: str, signature: Signature | None, tokens: list[int], better_than: int
    ) -> tuple[list[Any], list[int]] | None:
        """Read back the file sharing the most with ``tokens``, if it shares more than
        ``better_than`` tokens; a bad file is deleted and skipped."""
        if not self.enabled or signature is None:
            return None
        self.scanned(SCAN_WAIT_S)
        with self._lock:
            index = self._indexes.get(identity)
            key, shared = index.find(tokens) if index is not None else (None, 0)
            if key is None or index is None or shared <= better_than or shared < self.min_tokens // 2:
                return None
            entry = index.get(key)
        if not entry.path.exists():  # evicted meanwhile
            self._forget(identity, key, delete=False)
            return None
        try:
            layers = read_cache(entry.path, identity, list(key), signature)
        except Exception as exc:
            log.warning("skipping the prompt cache file %s: %s", entry.path.name, reason(exc))
            self._forget(identity, key, delete=True)
            return None
        now = time.time()
        with self._lock:
            entry.used = now
            if key in index:
                index.touch(key)
        with contextlib.suppress(OSError):
            os.utime(entry.path, (now, now))
        self.hits += 1
        log.debug("read %d cached prompt tokens from disk (%d shared)", len(key), shared)
        return layers, list(key)

    # -- the writer thread ---------------------------------------------------------------

    def _scan(self, directory: Path, scanned: threading.Event) -> None:
        """Index the files already there (oldest use first); delete what is not ours.

        However it ends (indexed, the directory unusable, moved again meanwhile, or an
        unexpected error) ``scanned`` is set, so no read waits on it for nothing. A scan
        whose directory changed meanwhile indexes nothing: the change queued the scan
        that counts, or turned the disk off."""
        try:
            found = self._index(directory, scanned)
        finally:
            scanned.set()
        if found:
            self._evict()
            log.info("%d prompt cache file(s) on disk", found)

    def _index(self, directory: Path, scanned: threading.Event) -> int:
        """How many files of ``directory`` the index holds now (0 when it is not current)."""
        try:
            files = scan_files(directory)
        except OSError as exc:
            log.error(
                "the prompt cache directory cannot be used (%s); prefixes stay in memory only", exc.strerror
            )
            return 0
        with self._lock:
            if self._scanned is not scanned:
                return 0
            for used, identity, key, path, size in files:
                for old in self._indexes.setdefault(identity, PrefixIndex()).add(
                    key, _File(path, used), size
                ):
                    self._unlink(old.path)
        return len(files)

    def _write(
        self, identity: str, key: tuple[int, ...], path: Path, layers: list[Any], metadata: dict[str, str]
    ) -> None:
        temp = path.with_name(path.name.removesuffix(".safetensors") + TEMP_SUFFIX)
        try:
            save_prompt_cache(str(temp), layers, metadata)
            os.chmod(temp, 0o600)
            os.replace(temp, path)
            size = path.stat().st_size
        except OSError as exc:
            log.warning("could not write a prompt cache file: %s", exc.strerror or exc)
            with contextlib.suppress(OSError):
                temp.unlink()
            self._forget(identity, key, delete=False)
            return
        with self._lock:
            self._pending.get(identity, set()).discard(key)
            if self.directory != path.parent:
                dropped = [_File(path, 0.0)]
            else:
                dropped = self._indexes.setdefault(identity, PrefixIndex()).add(
                    key, _File(path, time.time()), size
                )
        for old in dropped:
            self._unlink(old.path)
        self.writes += 1
        self._evict()

    def _evict(self) -> None:
        """Delete the least recently used files while the directory holds too much."""
        while True:
            with self._lock:
                total = sum(index.bytes for index in self._indexes.values())
                heads = [
                    (index.get(k).used, identity, k)
                    for identity, index in self._indexes.items()
                    if (k := index.oldest())
                ]
                if total <= self.max_bytes or not heads:
                    return
                _, identity, key = min(heads)
                entry = self._indexes[identity].drop(key)
            self._unlink(entry.path)

    def _forget(self, identity: str, key: tuple[int, ...], *, delete: bool) -> None:
        with self._lock:
            self._pending.get(identity, set()).discard(key)
            index = self._indexes.get(identity)
            entry = index.drop(key) if index is not None and key in index else None
        if delete and entry is not None:
            self._unlink(entry.path)

    @staticmethod
    def _unlink(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()
