"""The performance issues' targets, in one place; scenarios attach them to their headlines.

A goal is a bound on one headline number: ratios are mlxd / other, so a goal on a
throughput ratio is a floor and a goal on a latency ratio (or a time, a size) a ceiling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Goal:
    """``bound`` is the least (or, with ``lower_is_better``, the greatest) value that meets it."""

    bound: float
    lower_is_better: bool = False

    @property
    def sign(self) -> str:
        """``≥`` or ``≤``."""
        return "≤" if self.lower_is_better else "≥"

    def met(self, value: float) -> bool:
        """Whether ``value`` meets the goal (never for NaN)."""
        if math.isnan(value):
            return False
        return value <= self.bound if self.lower_is_better else value >= self.bound

    def shortfall(self, value: float) -> float:
        """How far ``value`` is from the bound, in percent of the bound (0 when met)."""
        if self.met(value) or self.bound == 0:
            return 0.0
        return abs(value - self.bound) / abs(self.bound) * 100


#: Single-stream decode tokens/s (streaming and not): mlxd / raw engine, mlxd / mlx_lm.server.
SINGLE_VS_RAW = Goal(0.97)
SINGLE_VS_SEED = Goal(1.0)
#: 16 concurrent streaming clients: aggregate tokens/s and p99 TTFT, mlxd / mlx_lm.server.
CONCURRENT_LEVEL = 16
CONCURRENT_VS_SEED = Goal(1.2)
CONCURRENT_TTFT_P99_VS_SEED = Goal(0.8, lower_is_better=True)
#: Requests/s at max_tokens = 1 from 16 clients, mlxd / mlx_lm.server.
OVERHEAD_VS_SEED = Goal(2.0)
#: Last-turn TTFT of a multi-turn chat: mlxd / the same daemon with its prompt cache off,
#: and mlxd / a cold prefill of the whole history in the raw engine.
LAST_TURN_VS_CACHE_OFF = Goal(0.3, lower_is_better=True)
LAST_TURN_VS_COLD = Goal(0.3, lower_is_better=True)
#: Wall time of ``mlxd --help``, seconds.
HELP_SECONDS = Goal(0.3, lower_is_better=True)
#: Daemon start to the first ``/health`` 200, seconds.
START_SECONDS = Goal(2.0, lower_is_better=True)
#: Resident memory of an idle daemon, MB.
IDLE_RSS_MB = Goal(200.0, lower_is_better=True)
#: RSS growth over 10,000 requests (after a warm-up), percent.
RSS_GROWTH_PERCENT = Goal(5.0, lower_is_better=True)
