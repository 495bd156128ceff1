"""What a scenario hands back: tables for the report and the ratios worth a headline."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Table:
    """A titled table of already formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)


@dataclass
class Headline:
    """One number for the summary (a ratio unless ``unit`` says otherwise).

    ``target`` is the least value that meets the goal.
    """

    label: str
    value: float
    target: float | None = None
    unit: str = "×"

    @property
    def shown(self) -> str:
        """The value with its unit."""
        if math.isnan(self.value):
            return "n/a"
        if self.unit == "×":
            return fmt_ratio(self.value)
        if self.unit == "%":
            return f"{self.value:+.1f}%"
        return f"{self.value:.2f} {self.unit}"

    @property
    def goal(self) -> str:
        """The target as text, or ``-``."""
        return "-" if self.target is None else f"≥ {self.target:.2f}{self.unit}"

    @property
    def verdict(self) -> str:
        """``met``, ``missed by N%`` or ``-`` (no target, or nothing measured)."""
        if self.target is None or math.isnan(self.value):
            return "-"
        if self.value >= self.target:
            return "met"
        shortfall = (1 - self.value / self.target) * 100
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
