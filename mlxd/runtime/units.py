"""A model unit as residency tracks it, and the backend protocol residency drives.

A unit is one loaded model: base weights plus an optional adapter, keyed by
``ModelSpec.key``. ``ResidencyBackend`` is what loads and unloads units: the MLX worker in
the daemon (``MlxBackend``), a fake in tests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from mlxd.runtime.engine import LoadedModelStatus
from mlxd.runtime.specs import ModelSpec, UnitKey


class Resident(Protocol):
    """What residency needs to know of a loaded unit."""

    @property
    def memory_bytes(self) -> int: ...


M = TypeVar("M", bound=Resident)
M_co = TypeVar("M_co", bound=Resident, covariant=True)


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """A unit found loadable: the memory it will add, and where its weights are."""

    estimate_bytes: int
    path: Path | None = None


class ResidencyBackend(Protocol[M_co]):
    """Does what residency decides."""

    async def prepare(self, spec: ModelSpec, shares_base: bool) -> LoadPlan:
        """Check the unit's files and estimate its memory (``shares_base``: its base is
        already in memory, so only the adapter adds to it). Raises ``ModelLoadError``."""
        ...

    async def load(self, key: UnitKey, spec: ModelSpec, plan: LoadPlan) -> M_co: ...

    async def unload(self, key: UnitKey) -> bool: ...


@dataclass(eq=False)
class Unit(Generic[M]):
    """One model unit: resident, or on its way."""

    key: UnitKey
    spec: ModelSpec
    aliases: set[str]
    keep_alive: float
    last_used: float
    loading: asyncio.Future[M] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    loaded: M | None = None
    #: Sequences admitted (or waiting for the load) and not finished.
    active: int = 0
    estimate_bytes: int = 0
    #: No alias names it any more: it unloads once idle.
    retired: bool = False
    #: The unit whose model drafts for this one (speculative decoding); loaded first.
    draft: Unit[M] | None = None
    #: The units this one drafts for: it stays loaded while any of them is.
    pinned_by: set[UnitKey] = field(default_factory=set)

    @property
    def bytes(self) -> int:
        """Measured memory once loaded, the estimate until then."""
        return self.loaded.memory_bytes if self.loaded is not None else self.estimate_bytes

    @property
    def idle(self) -> bool:
        """Loaded, serving nothing and drafting for no loaded unit: a candidate for eviction."""
        return self.loaded is not None and self.active == 0 and not self.pinned_by

    def status(self, now: float) -> LoadedModelStatus:
        """This unit as ``/mlxd/status`` and ``mlxd ps`` show it (``now`` on the residency's clock)."""
        return LoadedModelStatus(
            alias=", ".join(sorted(self.aliases)),
            source=self.spec.label or self.spec.source,
            state="loaded" if self.loaded is not None else "loading",
            memory_bytes=self.loaded.memory_bytes if self.loaded is not None else 0,
            active_sequences=self.active,
            idle_s=0.0 if self.active else round(now - self.last_used, 1),
        )
