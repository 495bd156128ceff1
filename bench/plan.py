"""How much each scenario measures: the full run and the ``--quick`` smoke run, per model.

The tiny model's plan is the base. The small model's engine is ~100× slower per token
on a CPU, so its plan trims repetitions, tokens and client counts (``SMALL``): enough to
read the ratios, not so much that the run stops being something one waits for (the whole
full run is meant to stay under ~15 minutes on 2 cores).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions for one model in one run (full by default)."""

    quick: bool = False
    #: Warm-up per server: requests per mode from one client, then ``warmup_clients`` × 2
    #: requests from that many clients (0 skips that part), all of ``warmup_tokens``.
    warmup_tokens: int = 16
    warmup_requests: int = 2
    warmup_clients: int = 16
    single_tokens: int = 256
    single_reps: int = 10
    concurrency_levels: tuple[int, ...] = (1, 4, 16, 64)
    concurrency_tokens: int = 128
    concurrency_waves: int = 3
    concurrency_min_requests: int = 6
    overhead_concurrency: int = 16
    overhead_requests: int = 500
    overhead_rounds: int = 2
    start_reps: int = 3
    leak_warmup: int = 500
    leak_requests: int = 10_000
    leak_requests_seed: int = 2_000
    leak_unique: int = 2_000
    leak_pool: int = 64
    turns: int = 5
    turn_words: int = 180
    turn_tokens: int = 64
    conversations: int = 3
    switch_requests: int = 20
    switch_tokens: int = 8
    help_reps: int = 5


FULL = Plan()
QUICK = Plan(
    quick=True,
    single_tokens=64,
    single_reps=3,
    concurrency_tokens=32,
    concurrency_waves=1,
    overhead_requests=100,
    overhead_rounds=1,
    start_reps=1,
    leak_warmup=50,
    leak_requests=300,
    leak_requests_seed=100,
    leak_unique=100,
    conversations=1,
    turn_tokens=16,
    switch_requests=6,
    help_reps=2,
)

#: The small model, full run: 1 and 16 clients, one wave, short answers and short turns.
#: On a CPU it prefills and decodes ~8-9 tokens/s (a request's ~27-token prompt alone takes
#: ~3.5 s), so 16 clients cost ~1 minute per target; this part of a run should take ~9 minutes.
SMALL: dict[str, Any] = {
    "warmup_tokens": 2,
    "warmup_requests": 1,
    "warmup_clients": 0,
    "single_tokens": 32,
    "single_reps": 2,
    "concurrency_levels": (1, 16),
    "concurrency_tokens": 8,
    "concurrency_waves": 1,
    "concurrency_min_requests": 2,
    "turn_words": 8,
    "turn_tokens": 8,
    "conversations": 1,
}
#: The small model in a quick run: one repetition, a few tokens, 4 clients instead of 16.
SMALL_QUICK: dict[str, Any] = {
    **SMALL,
    "single_tokens": 16,
    "single_reps": 1,
    "concurrency_levels": (1, 4),
    "concurrency_tokens": 4,
    "concurrency_min_requests": 1,
    "turn_words": 4,
    "turn_tokens": 4,
}
_SCALED: dict[tuple[str, bool], dict[str, Any]] = {("small", False): SMALL, ("small", True): SMALL_QUICK}


def plan_for(quick: bool, tokens: int | None = None, model: str = "tiny") -> Plan:
    """The plan for a model in a run; ``tokens`` overrides the single-stream length."""
    plan = replace(QUICK if quick else FULL, **_SCALED.get((model, quick), {}))
    return replace(plan, single_tokens=tokens) if tokens else plan
