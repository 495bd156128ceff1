"""The cyclic garbage collector's pauses in this process, for probes that time steps.

A full collection walks every tracked object, tens of milliseconds in a process that has
imported an ML stack; in a client that reads a stream it looks like a gap in the stream.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Pause:
    """One collection: when it ended (``time.perf_counter``), how long it took, which generation."""

    ended: float
    seconds: float
    generation: int


@dataclass
class GcPauses:
    """Records every collection while entered: ``with GcPauses() as pauses: ...``."""

    pauses: list[Pause] = field(default_factory=list)
    _began: float | None = None

    def _record(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._began = now
        elif self._began is not None:
            self.pauses.append(Pause(now, now - self._began, int(info.get("generation", -1))))
            self._began = None

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._record)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        gc.callbacks.remove(self._record)

    def longer_than(self, seconds: float) -> list[Pause]:
        """The pauses over ``seconds``."""
        return [p for p in self.pauses if p.seconds > seconds]

    def summary(self, over: float = 0.001) -> str:
        """``N collections, M over 1 ms (longest X ms, generation G)``."""
        long = self.longer_than(over)
        text = f"{len(self.pauses)} collections, {len(long)} over {over * 1e3:.0f} ms"
        if long:
            worst = max(long, key=lambda p: p.seconds)
            text += f" (longest {worst.seconds * 1e3:.1f} ms, generation {worst.generation})"
        return text
