"""Parsers for the human-friendly sizes and durations used in ``mlxd.toml``."""

from __future__ import annotations

import re

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)
_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

FOREVER = float("inf")


def parse_size(value: str | int) -> int:
    """Parse ``"24GB"``, ``"512MiB"`` or a byte count into bytes."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string such as '2GB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a size; use e.g. '512MB', '2GiB' or a byte count")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "b").lower()])


def parse_duration(value: str | int | float) -> float:
    """Parse ``"15m"``, ``"1h30m"``, ``"0"``, ``"forever"`` or seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be seconds or a string such as '15m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    text = value.strip().lower()
    if text in {"forever", "never", "-1"}:
        return FOREVER
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration; use e.g. '30s', '15m', '2h', '0' or 'forever'")
    return sum(float(n) * _SECONDS[u] for n, u in parts)
