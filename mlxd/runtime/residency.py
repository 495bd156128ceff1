"""Which model units are in memory: single-flight loads, LRU eviction, keep_alive, retirement.

Residency decides; a ``ResidencyBackend`` does the loading (the MLX worker in the daemon,
a fake in tests, which also pass a fake clock). The rules:

- A cold unit loads once however many requests wait for it (single flight).
- Units stay within ``max_loaded_models`` and the memory budget: the least recently used
  idle units make room; a unit serving requests is never evicted. When no idle unit can
  make room, the request gets 503 ``model_loading``.
- A load that fails leaves the resident units as they were: only the units whose memory
  the newcomer needs go before it loads; a unit over the count limit goes once the
  newcomer has loaded.
- ``keep_alive``: an idle unit unloads after that long (``0``: as soon as it is idle).
- Retirement: a unit no alias names any more unloads once its last request ends.
- Draft models: a unit whose spec has a draft loads the draft's unit first (it counts
  against the limits like any unit) and pins it: the draft stays while its unit is
  loaded, and a draft no alias names (``<alias>/draft``) goes with its last unit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Coroutine, Mapping
from typing import Any, Generic

from mlxd.errors import ModelLoadError, UnavailableError
from mlxd.runtime.engine import LoadedModelStatus
from mlxd.runtime.specs import ModelSpec, UnitKey
from mlxd.runtime.units import M, ResidencyBackend, Unit

log = logging.getLogger("mlxd.runtime")


class Residency(Generic[M]):
    """The loaded units, under the count and memory limits."""

    def __init__(
        self,
        backend: ResidencyBackend[M],
        *,
        max_loaded_models: int,
        memory_budget_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self._max = max_loaded_models
        self._budget = memory_budget_bytes
        self._clock = clock
        self._units: dict[UnitKey, Unit[M]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Loads started since the engine started.
        self.loads = 0

    def units(self) -> list[Unit[M]]:
        """Every unit, loaded or loading."""
        return list(self._units.values())

    def status(self) -> list[LoadedModelStatus]:
        """Every unit as ``/mlxd/status`` and ``mlxd ps`` show it."""
        now = self._clock()
        return [unit.status(now) for unit in self._units.values()]

    def set_limits(self, max_loaded_models: int, memory_budget_bytes: int) -> None:
        """New limits; idle units over them unload now."""
        self._max, self._budget = max_loaded_models, memory_budget_bytes
        self._spawn(self._trim())

    def acquire(self, alias: str, spec: ModelSpec, keep_alive: float, count: int = 1) -> Unit[M]:
        """The unit for ``spec``, ``count`` sequences busier; a cold one starts loading (once)."""
        unit = self._units.get(spec.key)
        if unit is None:
            unit = Unit(spec.key, spec, {alias}, keep_alive, self._clock())
            self._units[spec.key] = unit
            if spec.draft is not None:
                unit.draft = self._pin(spec.draft, unit, alias + "/draft")
            self._spawn(self._load(unit))
        else:
            unit.aliases.add(alias)
            unit.keep_alive = keep_alive
        unit.active += count
        return unit

    def _pin(self, spec: ModelSpec, holder: Unit[M], name: str) -> Unit[M]:
        """The draft unit ``holder`` needs (loading it if cold), kept loaded while ``holder`` is."""
        draft = self._units.get(spec.key)
        if draft is None:
            draft = Unit(spec.key, spec, {name}, holder.keep_alive, self._clock())
            self._units[spec.key] = draft
            self._spawn(self._load(draft))
        draft.pinned_by.add(holder.key)
        return draft

    def _unpin(self, holder: Unit[M]) -> None:
        """``holder`` left: its draft may go (at once when no alias of the config names it)."""
        draft = holder.draft
        if draft is None:
            return
        draft.pinned_by.discard(holder.key)
        if draft.idle and all(name.endswith("/draft") for name in draft.aliases):
            self._spawn(self._evict(draft))
        else:
            self.release(draft, 0)

    async def ready(self, unit: Unit[M]) -> M:
        """The unit's loaded model, once it is loaded (raises what the load raised)."""
        if unit.loaded is not None:
            return unit.loaded
        return await asyncio.shield(unit.loading)

    def release(self, unit: Unit[M], count: int = 1) -> None:
        """``count`` sequences of ``unit`` ended."""
        unit.active = max(0, unit.active - count)
        unit.last_used = self._clock()
        if not unit.idle:
            return
        if unit.keep_alive <= 0 or unit.retired:
            self._spawn(self._evict(unit))
        elif self._over_limits():
            self._spawn(self._trim())

    async def load(self, alias: str, spec: ModelSpec, keep_alive: float) -> None:
        """Load the unit behind ``alias`` now (it then stays until its keep_alive runs out)."""
        unit = self.acquire(alias, spec, keep_alive)
        try:
            await self.ready(unit)
        finally:
            unit.active -= 1
            unit.last_used = self._clock()

    async def unload(self, alias: str) -> bool:
        """Unload the idle units ``alias`` uses now; False when none was loaded."""
        units = [u for u in self._units.values() if alias in u.aliases and u.loaded is not None]
        for unit in units:
            if unit.active:
                raise UnavailableError(f"{alias!r} is serving {unit.active} request(s)", retry_after=5)
        return any([await self._evict(unit) for unit in units])

    def retire(
        self, keep: Collection[UnitKey], aliases: Mapping[UnitKey, Collection[str]] | None = None
    ) -> None:
        """Units not in ``keep`` retire (unloading once idle); with ``aliases``, the others
        show only the names the config still gives them."""
        for unit in list(self._units.values()):
            if unit.key not in keep:
                unit.retired = True
                if unit.idle:
                    self._spawn(self._evict(unit))
                continue
            unit.retired = False
            if aliases is not None and unit.key in aliases:
                named = set(aliases[unit.key])
                unit.aliases = (unit.aliases & named) or named

    async def expire(self) -> None:
        """Unload the idle units whose keep_alive ran out."""
        now = self._clock()
        for unit in list(self._units.values()):
            if unit.idle and now - unit.last_used >= unit.keep_alive:
                await self._evict(unit)

    def clear(self) -> None:
        """Forget every unit (the worker restarted without them)."""
        self._units.clear()

    async def settle(self) -> None:
        """Wait for the loads and unloads started so far (tests; shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._tasks.discard)

    async def _load(self, unit: Unit[M]) -> None:
        try:
            shares_base = any(
                u is not unit and u.spec.base_key == unit.spec.base_key for u in self._units.values()
            )
            plan = await self._backend.prepare(unit.spec, shares_base)
            unit.estimate_bytes = plan.estimate_bytes
            if unit.draft is not None:
                await self.ready(unit.draft)
            await self._make_room(unit)
            self.loads += 1
            loaded = await self._backend.load(unit.key, unit.spec, plan)
        except BaseException as exc:
            if self._units.get(unit.key) is unit:
                del self._units[unit.key]
                self._unpin(unit)
            if isinstance(exc, Exception):
                log.warning("could not load %s: %s", ", ".join(sorted(unit.aliases)), exc)
            unit.loading.set_exception(exc)
            unit.loading.exception()  # waiters re-raise it; do not warn when there are none
            return
        unit.loaded = loaded
        unit.loading.set_result(loaded)
        log.info("loaded %s (%s MB)", ", ".join(sorted(unit.aliases)), loaded.memory_bytes // 2**20)
        if self._over_limits():
            await self._trim()

    async def _make_room(self, incoming: Unit[M]) -> None:
        """Evict what the newcomer's memory needs; refuse when idle units cannot make room."""
        if incoming.estimate_bytes > self._budget:
            raise ModelLoadError(
                f"the model needs about {incoming.estimate_bytes // 2**20} MB but memory_budget "
                f"allows {self._budget // 2**20} MB"
            )
        while True:
            others = [u for u in self._units.values() if u is not incoming]
            surplus = len(others) + 1 - self._max
            excess = sum(u.bytes for u in others) + incoming.estimate_bytes - self._budget
            idle = self._idle(others)
            if len(idle) < surplus or sum(u.bytes for u in idle) < excess:
                raise UnavailableError(
                    "every loaded model is busy and no more fit; try again shortly",
                    code="model_loading",
                    retry_after=2,
                )
            if excess <= 0:
                return  # a unit over the count goes once the newcomer has loaded
            await self._evict(idle[0])

    def _over_limits(self) -> bool:
        units = self._units.values()
        return len(units) > self._max or sum(u.bytes for u in units) > self._budget

    async def _trim(self) -> None:
        """Evict idle units, least recently used first, while over a limit."""
        while self._over_limits():
            idle = self._idle(self._units.values())
            if not idle:
                return
            await self._evict(idle[0])

    @staticmethod
    def _idle(units: Collection[Unit[M]]) -> list[Unit[M]]:
        return sorted((u for u in units if u.idle), key=lambda u: u.last_used)

    async def _evict(self, unit: Unit[M]) -> bool:
        if self._units.get(unit.key) is not unit or not unit.idle:
            return False
        del self._units[unit.key]
        unloaded = await self._backend.unload(unit.key)
        log.info("unloaded %s", ", ".join(sorted(unit.aliases)))
        self._unpin(unit)
        return unloaded
