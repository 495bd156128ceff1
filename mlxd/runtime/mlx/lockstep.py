"""Several ranks, one command stream: rank 0's worker shares what it does, the others follow.

A distributed daemon runs this worker on every rank. Rank 0's gets its commands from the
event loop, as a single process's does; at each *sync* it sends them to the other ranks,
which apply the same commands at the same point and then take the same decode steps on
their shards. Everything per request (batching, the prompt cache, samplers, grammars,
stop strings) rides on that one stream, so nothing else needs to know about ranks.

A sync is two ``all_sum`` collectives at most: a small header every rank writes its own
slots of (rank 0: the payload's length, a random seed, the passes until the next sync;
every rank: its step time), then the pickled commands when there are any. ``all_sum``
with zeros from every rank but rank 0 is a broadcast that every backend has, and the
header doubles as the per-rank step-time report. The seed re-seeds MLX's global random
state on every rank, so unseeded sampling draws the same tokens everywhere.

Every rank must run its collectives in the same order, and MLX runs each stream's work
on its own: so these collectives go on mlx-lm's generation stream, behind the decode
steps (and their collectives) already queued there, and a load first waits for that
stream to finish, since mlx-lm's load barrier runs on another one.

While sequences decode, syncing at every step would add a collective to each one, so
rank 0 tells the others how many passes to run before the next sync, enough to fill
about ``SYNC_BUDGET_S``: commands wait that long at most. An idle worker syncs at once
when a command arrives (and once a second anyway), so the first request pays nothing.
"""

from __future__ import annotations

import logging
import pickle
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_lm.generate import generation_stream

from mlxd import errors
from mlxd.errors import MlxdError, ModelLoadError
from mlxd.runtime.cluster import ClusterSpec
from mlxd.runtime.mlx.commands import Call, Command, Configure
from mlxd.runtime.mlx.loading import LoadedModel
from mlxd.runtime.mlx.lockstep_wire import from_wire, refused, to_wire
from mlxd.runtime.mlx.sharded import join_load_barrier, load_sharded, preflight
from mlxd.runtime.mlx.stats import WorkerStats
from mlxd.runtime.specs import ModelSpec, RuntimeSettings

log = logging.getLogger("mlxd.runtime")

#: Longest a command waits on rank 0 while sequences decode, in seconds.
SYNC_BUDGET_S = 0.02
#: Most passes between two syncs.
MAX_PASSES = 32
#: Header slots before the per-rank step times: payload length, seed, passes.
_HEADER = 3


def _describe(exc: BaseException) -> tuple[str, str, str | None]:
    if isinstance(exc, MlxdError):
        return type(exc).__name__, exc.message, exc.hint
    return "ModelLoadError", f"{type(exc).__name__}: {exc}", None


class Lockstep:
    """This rank's side of the shared command stream (the worker thread's only)."""

    def __init__(self, spec: ClusterSpec, group: Any, settings: RuntimeSettings, stats: WorkerStats) -> None:
        self.spec = spec
        self.group = group
        self.rank = spec.rank
        self.size = spec.size
        self.leader = spec.rank == 0
        self._stats = stats
        #: Rank 0 sends its settings first: every rank must batch and cache alike.
        self._opening: list[Command] = [Configure(settings)] if self.leader else []
        self._left = 0
        self._started: float | None = None
        self._work = 0.0
        self._passes = 0
        self._pass_s = 0.0

    @classmethod
    def join(cls, spec: ClusterSpec, settings: RuntimeSettings, stats: WorkerStats) -> Lockstep:
        """Join ``mx.distributed`` (returns once every rank has) on the worker thread."""
        group = mx.distributed.init(strict=True, backend=spec.backend)
        if group.size() != spec.size or group.rank() != spec.rank:
            raise RuntimeError(
                f"mx.distributed made this rank {group.rank()} of {group.size()},"
                f" the launcher said {spec.rank} of {spec.size}"
            )
        stats.rank_step_seconds = [0.0] * spec.size
        log.info("joined %d ranks over %s as %s", spec.size, spec.backend, spec.describe(spec.rank))
        spec.joined()
        return cls(spec, group, settings, stats)

    # ---- the command stream -------------------------------------------------------------

    def exchange(self, take: Callable[..., list[Command]], *, block: bool) -> list[Command]:
        """This pass's commands: none between syncs; at a sync, rank 0's (taken from its
        queue with ``take``), the same on every rank. ``block``: nothing is decoding."""
        now = time.perf_counter()
        if self._started is not None:
            self._work += now - self._started
            self._passes += 1
        if not block and self._left > 0:
            self._left -= 1
            self._started = now
            return []
        commands = self._sync(take, block)
        self._started = time.perf_counter() if not block or commands else None
        return commands

    def _sync(self, take: Callable[..., list[Command]], block: bool) -> list[Command]:
        header = np.zeros(_HEADER + self.size, dtype=np.int64)
        local: list[Command] = []
        mine: list[Command] = []
        payload = b""
        if self.leader:
            local = [c for c in take(block=block) if not refused(c)]
            mine = [*self._opening, *(c for c in local if not isinstance(c, Call))]
            self._opening = []
            payload = pickle.dumps([to_wire(c) for c in mine]) if mine else b""
            header[:_HEADER] = (len(payload), random.getrandbits(62), self._passes_per_sync())
        step = self._work / self._passes if self._passes else 0.0
        header[_HEADER + self.rank] = round(step * 1e6)
        self._work, self._passes = 0.0, 0
        shared = self._all_sum(header)
        length, seed, passes = (int(v) for v in shared[:_HEADER])
        if length:
            data = self._broadcast(payload, length)
            if not self.leader:
                mine = [from_wire(c) for c in pickle.loads(data)]  # noqa: S301 - rank 0, over MLX's own link
        mx.random.seed(seed)
        self._left = max(0, passes - 1)
        self._record_steps(shared[_HEADER:])
        calls = [c for c in local if isinstance(c, Call)]  # rank 0's own business
        return [*mine, *calls]

    def _passes_per_sync(self) -> int:
        if self._passes:
            step = self._work / self._passes
            self._pass_s = step if not self._pass_s else 0.8 * self._pass_s + 0.2 * step
        if self._pass_s <= 0:
            return 1
        return max(1, min(MAX_PASSES, int(SYNC_BUDGET_S / self._pass_s)))

    def _record_steps(self, micros: Any) -> None:
        seconds = self._stats.rank_step_seconds
        for rank, value in enumerate(micros):
            if value > 0 and rank < len(seconds):
                seconds[rank] = float(value) / 1e6

    # ---- collectives --------------------------------------------------------------------

    def _all_sum(self, values: Any) -> Any:
        out = mx.distributed.all_sum(mx.array(values), group=self.group, stream=generation_stream)
        mx.eval(out)
        return np.array(out)

    def _broadcast(self, data: bytes, length: int) -> bytes:
        """Rank 0's ``data`` (``length`` bytes) on every rank."""
        return self._place([(0, data if self.leader else b"")], length)[:length]

    def _place(self, pieces: list[tuple[int, bytes]], length: int) -> bytes:
        """Sum byte buffers in which each rank filled only its own ranges (``(offset, bytes)``).

        Sent as int32 words: MLX sums int32 far faster than uint8, and a word that only
        one rank filled sums to exactly that rank's bytes."""
        buffer = np.zeros(-(-length // 4) * 4, dtype=np.uint8)
        for offset, data in pieces:
            buffer[offset : offset + len(data)] = np.frombuffer(data, dtype=np.uint8)
        return bytes(self._all_sum(buffer.view(np.int32)).view(np.uint8))

    def gather(self, data: bytes) -> list[bytes]:
        """Every rank's ``data``, on every rank (two collectives)."""
        sizes = np.zeros(self.size, dtype=np.int64)
        sizes[self.rank] = len(data)
        sizes = self._all_sum(sizes)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(offsets[-1])
        if not total:
            return [b""] * self.size
        joined = self._place([(int(offsets[self.rank]), data)], total)
        return [joined[int(offsets[r]) : int(offsets[r + 1])] for r in range(self.size)]

    def agreed_bytes(self, layers: list[Any]) -> int:
        """A prompt-cache entry's size as every rank counts it: the largest shard's.

        Ranks hold different shares of a cache (a pipeline's stages have different layer
        counts), and each evicts by its own count: were the counts not the same, one rank
        would keep an entry another dropped, and their next prefills would differ."""
        local = np.array([sum(int(layer.nbytes) for layer in layers)], dtype=np.int64)
        out = mx.distributed.all_max(mx.array(local), group=self.group, stream=generation_stream)
        mx.eval(out)
        return int(np.array(out)[0])

    # ---- loading ------------------------------------------------------------------------

    def load(self, spec: ModelSpec, path: Path) -> LoadedModel:
        """Load this rank's shard of ``spec``; every rank succeeds or all raise the same error.

        A rank that cannot load (no such directory there, a family that cannot be split
        this way) must not leave the others waiting in mlx-lm's load barrier: every rank
        first checks what it can, and all agree before any of them loads."""
        mx.synchronize(generation_stream)
        local = path
        try:
            if self.spec.resolve is not None:
                local = self.spec.resolve(spec)
            preflight(spec, local, self.size)
            failure = None
        except Exception as exc:
            failure = _describe(exc)
        self._agree(failure, spec)
        loaded = None
        try:
            loaded = load_sharded(spec, local, self.group)
            failure = None
        except Exception as exc:
            failure = _describe(exc)
            join_load_barrier(self.group)  # where the others wait for this rank
        self._agree(failure, spec)
        assert loaded is not None
        return loaded

    def _agree(self, failure: tuple[str, str, str | None] | None, spec: ModelSpec) -> None:
        """Raise, on every rank alike, the first failure any rank had (rank 0's own first)."""
        reports = [pickle.loads(data) for data in self.gather(pickle.dumps(failure))]  # noqa: S301
        failed = [(rank, report) for rank, report in enumerate(reports) if report is not None]
        if not failed:
            return
        rank, (kind, message, hint) = failed[0]
        cls = getattr(errors, kind, ModelLoadError)
        if not (isinstance(cls, type) and issubclass(cls, ModelLoadError)):
            cls = ModelLoadError
        if rank != 0:
            message = f"{spec.label or spec.source} could not load on {self.spec.describe(rank)}: {message}"
        raise cls(message, hint=hint)
