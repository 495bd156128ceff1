"""How much each scenario measures: the full run and the ``--quick`` smoke run."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions for one run (full by default)."""

    quick: bool = False
    single_tokens: int = 256
    single_reps: int = 10
    concurrency_levels: tuple[int, ...] = (1, 4, 16, 64)
    concurrency_tokens: int = 128
    concurrency_waves: int = 3
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
    help_reps=2,
)


def plan_for(quick: bool, tokens: int | None = None) -> Plan:
    """The plan for a run; ``tokens`` overrides the single-stream length."""
    plan = QUICK if quick else FULL
    return replace(plan, single_tokens=tokens) if tokens else plan
