"""The benchmark's scenarios, in report order."""

from __future__ import annotations

from bench.scenarios import cli_help, concurrency, lifecycle, multiturn, overhead, single, switching
from bench.scenarios.base import Context, Scenario

ALL: tuple[Scenario, ...] = (
    single.SCENARIO,
    concurrency.SCENARIO,
    overhead.SCENARIO,
    lifecycle.SCENARIO,
    multiturn.SCENARIO,
    switching.SCENARIO,
    cli_help.SCENARIO,
)
BY_NAME = {scenario.name: scenario for scenario in ALL}

__all__ = ["ALL", "BY_NAME", "Context", "Scenario"]
