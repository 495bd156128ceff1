"""Residency's rules with a fake backend and a fake clock (as Ollama tests its scheduler):
single-flight loads, LRU eviction under the count and the memory budget, keep_alive,
retirement. Each test runs in milliseconds; no MLX, no server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from mlxd.errors import ModelLoadError, UnavailableError
from mlxd.runtime.residency import Residency
from mlxd.runtime.specs import ModelSpec
from tests.fakes.engine import FakeBackend, FakeModel, Faults

T = TypeVar("T")
MB = 2**20


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(source: str, adapter: str | None = None) -> ModelSpec:
    from pathlib import Path

    return ModelSpec(source=source, adapter_path=Path(adapter) if adapter else None)


class World:
    """A residency over a fake backend, and what the test needs to drive it."""

    def __init__(self, *, max_loaded: int = 2, budget: int = 1000 * MB, sizes: dict[str, int] | None = None):
        self.clock = Clock()
        self.faults = Faults()
        self.backend = FakeBackend(sizes or {}, 2048, self.faults)
        self.residency: Residency[FakeModel] = Residency(
            self.backend, max_loaded_models=max_loaded, memory_budget_bytes=budget, clock=self.clock
        )

    async def use(self, alias: str, keep_alive: float = 60.0, source: str | None = None) -> None:
        """One request for ``alias`` (its model is ``source``, default the alias), start to end."""
        unit = self.residency.acquire(alias, spec(source or alias), keep_alive)
        try:
            await self.residency.ready(unit)
        finally:
            self.residency.release(unit)
        await self.residency.settle()

    def resident(self) -> list[str]:
        return sorted(u.spec.source for u in self.residency.units())

    def loads(self) -> list[str]:
        return [source for kind, source in self.backend.calls if kind == "load"]


def run(test: Callable[[World], Awaitable[T]], **world: Any) -> T:
    async def main() -> T:
        return await test(World(**world))

    return asyncio.run(main())


def test_concurrent_requests_for_a_cold_model_load_it_once() -> None:
    async def test(w: World) -> None:
        w.backend.hold = asyncio.Event()
        units = [w.residency.acquire("a", spec("a"), 60) for _ in range(10)]
        assert len({id(u) for u in units}) == 1
        waiting = [asyncio.ensure_future(w.residency.ready(u)) for u in units]
        await asyncio.sleep(0)
        assert [m.state for m in w.residency.status()] == ["loading"]
        w.backend.hold.set()
        models = await asyncio.gather(*waiting)
        assert len({id(m) for m in models}) == 1
        assert w.loads() == ["a"]
        assert w.residency.loads == 1
        assert w.residency.status()[0].active_sequences == 10

    run(test)


def test_the_least_recently_used_idle_model_makes_room_under_the_count() -> None:
    async def test(w: World) -> None:
        await w.use("a")
        w.clock.now += 1
        await w.use("b")
        w.clock.now += 1
        await w.use("a")  # a is now more recently used than b
        w.clock.now += 1
        await w.use("c")
        assert w.resident() == ["a", "c"]
        # Over the count only: b goes once c has loaded (a failed load would have kept it).
        assert w.backend.calls[-2:] == [("load", "c"), ("unload", "b")]

    run(test, max_loaded=2)


def test_the_memory_budget_evicts_only_what_the_newcomer_needs() -> None:
    async def test(w: World) -> None:
        for alias in ("a", "b", "c"):
            await w.use(alias)
            w.clock.now += 1
        assert w.resident() == ["a", "b", "c"]  # 30 + 30 + 30 of 100
        await w.use("big")  # 60 MB: needs two of them to go, the two least recently used
        assert w.resident() == ["big", "c"]
        assert [s for k, s in w.backend.calls if k == "unload"] == ["a", "b"]

    run(test, max_loaded=4, budget=100 * MB, sizes={"a": 30 * MB, "b": 30 * MB, "c": 30 * MB, "big": 60 * MB})


def test_a_model_larger_than_the_budget_is_refused_without_evicting_anything() -> None:
    async def test(w: World) -> None:
        await w.use("a")
        with pytest.raises(ModelLoadError, match="memory_budget"):
            await w.use("huge")
        assert w.resident() == ["a"]
        assert w.loads() == ["a"]

    run(test, budget=100 * MB, sizes={"a": 10 * MB, "huge": 200 * MB})


def test_a_busy_model_is_never_evicted_and_the_newcomer_gets_503_model_loading() -> None:
    async def test(w: World) -> None:
        busy = w.residency.acquire("a", spec("a"), 60)
        await w.residency.ready(busy)
        with pytest.raises(UnavailableError) as refused:
            await w.use("b")
        assert refused.value.code == "model_loading"
        assert refused.value.retry_after >= 1
        assert w.resident() == ["a"]
        w.residency.release(busy)
        await w.use("b")  # idle now: it makes room
        assert w.resident() == ["b"]

    run(test, max_loaded=1)


def test_a_failed_load_keeps_the_model_it_would_have_replaced() -> None:
    async def test(w: World) -> None:
        await w.use("a")
        w.faults.broken_sources.add("broken")
        with pytest.raises(ModelLoadError, match="scripted failure"):
            await w.use("broken")
        assert w.resident() == ["a"]  # the count limit is settled after a successful load only
        assert ("unload", "a") not in w.backend.calls
        await w.use("b")  # a real newcomer still replaces it
        assert w.resident() == ["b"]

    run(test, max_loaded=1)


def test_keep_alive_unloads_an_idle_model_once_it_runs_out() -> None:
    async def test(w: World) -> None:
        await w.use("a", keep_alive=10)
        await w.use("forever", keep_alive=float("inf"))
        w.clock.now += 9.9
        await w.residency.expire()
        assert w.resident() == ["a", "forever"]
        w.clock.now += 0.2
        await w.residency.expire()
        assert w.resident() == ["forever"]
        w.clock.now += 10**9
        await w.residency.expire()
        assert w.resident() == ["forever"]

    run(test)


def test_keep_alive_zero_unloads_when_the_last_request_ends() -> None:
    async def test(w: World) -> None:
        first = w.residency.acquire("a", spec("a"), 0)
        second = w.residency.acquire("a", spec("a"), 0)
        await w.residency.ready(first)
        w.residency.release(first)
        await w.residency.settle()
        assert w.resident() == ["a"]  # one request still runs
        w.residency.release(second)
        await w.residency.settle()
        assert w.resident() == []

    run(test)


def test_a_busy_model_outlives_its_keep_alive() -> None:
    async def test(w: World) -> None:
        unit = w.residency.acquire("a", spec("a"), 5)
        await w.residency.ready(unit)
        w.clock.now += 100
        await w.residency.expire()
        assert w.resident() == ["a"]
        w.residency.release(unit)
        w.clock.now += 5
        await w.residency.expire()
        assert w.resident() == []

    run(test)


def test_preload_loads_now_and_keeps_the_model_until_keep_alive() -> None:
    async def test(w: World) -> None:
        await w.residency.load("a", spec("a"), 30)
        [status] = w.residency.status()
        assert (status.alias, status.state, status.active_sequences) == ("a", "loaded", 0)
        w.clock.now += 29
        await w.residency.expire()
        assert w.resident() == ["a"]
        w.clock.now += 2
        await w.residency.expire()
        assert w.resident() == []

    run(test)


def test_retirement_waits_for_the_request_in_flight() -> None:
    async def test(w: World) -> None:
        unit = w.residency.acquire("a", spec("a"), float("inf"))
        await w.residency.ready(unit)
        await w.use("b", keep_alive=float("inf"))
        w.residency.retire({spec("b").key})  # the config no longer names a
        await w.residency.settle()
        assert w.resident() == ["a", "b"]  # a still serves its request
        w.residency.release(unit)
        await w.residency.settle()
        assert w.resident() == ["b"]

    run(test)


def test_retirement_drops_removed_alias_names_from_the_status() -> None:
    async def test(w: World) -> None:
        await w.use("a", source="m")
        await w.use("b", source="m")
        assert [m.alias for m in w.residency.status()] == ["a, b"]
        w.residency.retire({spec("m").key}, {spec("m").key: ["a"]})
        assert [m.alias for m in w.residency.status()] == ["a"]
        assert w.loads() == ["m"]  # one unit all along

    run(test)


def test_lowering_max_loaded_models_unloads_the_surplus_idle_models_at_once() -> None:
    async def test(w: World) -> None:
        for alias in ("a", "b", "c"):
            await w.use(alias)
            w.clock.now += 1
        busy = w.residency.acquire("a", spec("a"), 60)
        w.residency.set_limits(1, 10**12)
        await w.residency.settle()
        assert w.resident() == ["a"]  # b and c were idle; a serves a request
        w.residency.release(busy)

    run(test, max_loaded=3)


def test_unload_refuses_a_busy_model_and_frees_an_idle_one() -> None:
    async def test(w: World) -> None:
        unit = w.residency.acquire("a", spec("a"), 60)
        await w.residency.ready(unit)
        with pytest.raises(UnavailableError, match="serving 1 request"):
            await w.residency.unload("a")
        w.residency.release(unit)
        assert await w.residency.unload("a") is True
        assert await w.residency.unload("a") is False
        assert w.resident() == []

    run(test)


def test_adapters_over_one_base_are_units_of_their_own() -> None:
    async def test(w: World) -> None:
        await w.use("base", source="m")
        unit = w.residency.acquire("lora", spec("m", adapter="adapters/x"), 60)
        await w.residency.ready(unit)
        w.residency.release(unit)
        assert [(m.alias, m.state) for m in w.residency.status()] == [("base", "loaded"), ("lora", "loaded")]
        assert w.loads() == ["m", "m"]

    run(test)


def drafted(source: str, draft: str) -> ModelSpec:
    """A unit over ``source`` whose draft model is ``draft``."""
    return ModelSpec(source=source, draft=ModelSpec(source=draft))


def test_a_draft_loads_first_counts_and_stays_while_its_unit_is_loaded() -> None:
    async def test(w: World) -> None:
        unit = w.residency.acquire("big", drafted("big", "small"), 60)
        await w.residency.ready(unit)
        w.residency.release(unit)
        await w.residency.settle()
        assert w.loads() == ["small", "big"]
        assert sorted(m.alias for m in w.residency.status()) == ["big", "big/draft"]
        w.clock.now += 1
        await w.use("c")
        assert w.resident() == ["big", "c", "small"]
        # A fourth unit under a count of three: the draft is the unit least recently used
        # but is not idle while big is loaded; big goes, and its draft (no alias names it)
        # with it.
        w.clock.now += 1
        await w.use("d")
        assert w.resident() == ["c", "d"]
        assert [s for k, s in w.backend.calls if k == "unload"] == ["big", "small"]

    run(test, max_loaded=3)


def test_a_draft_that_is_an_alias_stays_after_its_unit_goes() -> None:
    async def test(w: World) -> None:
        await w.use("small")
        unit = w.residency.acquire("big", drafted("big", "small"), 60)
        await w.residency.ready(unit)
        w.residency.release(unit)
        assert w.loads() == ["small", "big"]  # the alias's loaded unit is the draft
        assert await w.residency.unload("big")
        await w.residency.settle()
        assert w.resident() == ["small"]

    run(test)


def test_a_draft_that_fails_to_load_fails_its_unit() -> None:
    async def test(w: World) -> None:
        w.faults.broken_sources = {"small"}
        unit = w.residency.acquire("big", drafted("big", "small"), 60)
        with pytest.raises(ModelLoadError):
            await w.residency.ready(unit)
        w.residency.release(unit)
        await w.residency.settle()
        assert w.resident() == []
        assert w.loads() == ["small"]

    run(test)
