"""What every scenario gets: the model and its plan, a work directory and the targets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.clients import RequestResult
from bench.models import BenchModel
from bench.plan import Plan
from bench.results import ScenarioResult
from bench.stats import median, percentile
from bench.targets import Targets


@dataclass
class Context:
    """One model's share of a run; ``targets`` is None for scenarios that start their own processes."""

    plan: Plan
    model: BenchModel
    model_dir: Path
    workdir: Path
    say: Callable[[str], None]
    targets: Targets | None = None

    def running(self) -> Targets:
        """The shared targets (the CLI starts them for scenarios that need them)."""
        if self.targets is None:
            raise RuntimeError("this scenario needs the shared targets")
        return self.targets


@dataclass(frozen=True)
class Scenario:
    """A named measurement.

    A ``per_model`` scenario runs once for every model of the run; the others run once,
    on the run's first model (or on none, if not ``uses_model``).
    """

    name: str
    title: str
    run: Callable[[Context], Awaitable[ScenarioResult]]
    needs_targets: bool = True
    per_model: bool = False
    uses_model: bool = True


def ttfts(results: list[RequestResult]) -> list[float]:
    """Time to first content of each successful request."""
    return [r.ttft for r in results if r.error is None]


def gaps(results: list[RequestResult]) -> list[float]:
    """Every gap between content chunks, pooled over the requests."""
    return [g for r in results if r.error is None for g in r.gaps]


def tpot(results: list[RequestResult]) -> float:
    """Median time per output token after the first (decode pace, chunking aside)."""
    paces = [
        (r.times[-1] - r.times[0]) / (r.tokens - 1)
        for r in results
        if r.error is None and r.tokens > 1 and len(r.times) > 1
    ]
    return median(paces)


def p50_p99(values: list[float]) -> tuple[float, float]:
    """The median and the 99th percentile."""
    return median(values), percentile(values, 99)


def error_note(label: str, results: list[RequestResult]) -> str | None:
    """A line naming how many requests failed and the most common error, or None."""
    errors = [r.error for r in results if r.error is not None]
    if not errors:
        return None
    common = max(set(errors), key=errors.count)
    return f"- {label}: {len(errors)} of {len(results)} requests failed (most often: `{common[:160]}`)."


def checks(label: str, results: list[RequestResult], tokens: int) -> list[str]:
    """Notes on failed requests and on token counts other than the requested one."""
    notes = [note] if (note := error_note(label, results)) else []
    odd = [r.tokens for r in results if r.error is None and r.tokens != tokens]
    if odd:
        notes.append(
            f"- {label}: {len(odd)} responses had a token count other than {tokens} (e.g. {odd[0]})."
        )
    return notes
