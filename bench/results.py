"""What a scenario hands back: tables for the report and the ratios worth a headline."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.goals import Goal


@dataclass
class Table:
    """A titled table of already formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class Headline:
    """One number for the summary (a ratio unless ``unit`` says otherwise), maybe with a goal.

    ``model`` names the model it was measured on (the CLI fills it in).
    """

    label: str
    value: float
    goal: Goal | None = None
    unit: str = "×"
    model: str = ""

    def _format(self, value: float) -> str:
        if math.isnan(value):
            return "n/a"
        if self.unit == "×":
            return fmt_ratio(value)
        if self.unit == "%":
            return f"{value:+.1f}%"
        if self.unit in ("MB", "ms"):
            return f"{value:.1f} {self.unit}"
        return f"{value:.2f} {self.unit}"

    @property
    def shown(self) -> str:
        """The value with its unit."""
        return self._format(self.value)

    @property
    def target(self) -> str:
        """The goal as text (``≥ 0.97×``, ``≤ 2.00 s``), or ``-``."""
        return "-" if self.goal is None else f"{self.goal.sign} {self._format(self.goal.bound)}"

    @property
    def verdict(self) -> str:
        """``met``, ``missed by N%`` (of the bound) or ``-`` (no goal, or nothing measured)."""
        if self.goal is None or math.isnan(self.value):
            return "-"
        if self.goal.met(self.value):
            return "met"
        shortfall = self.goal.shortfall(self.value)
        return f"missed by {shortfall:.1f}%" if shortfall < 1 else f"missed by {shortfall:.0f}%"


@dataclass
class ScenarioResult:
    """One scenario's output: how it measured, its tables, its headline ratios."""

    name: str
    title: str
    method: str
    tables: list[Table] = field(default_factory=list)
    headlines: list[Headline] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The model it ran on ("" when the scenario uses none) and how long it took; the CLI fills them in.
    model: str = ""
    seconds: float = 0.0

    def label(self, model: str) -> None:
        """Record the model on the result and on each of its headlines."""
        self.model = model
        for headline in self.headlines:
            headline.model = model


def fmt(value: float, digits: int = 0, unit: str = "") -> str:
    """A number for a table cell; ``n/a`` for NaN."""
    if math.isnan(value):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def fmt_ratio(value: float) -> str:
    """A ratio as ``0.93×``; ``n/a`` for NaN."""
    return "n/a" if math.isnan(value) else f"{value:.2f}×"


def fmt_ms(seconds: float) -> str:
    """Seconds shown as milliseconds."""
    return fmt(seconds * 1000, 1 if seconds < 0.1 else 0, " ms")
