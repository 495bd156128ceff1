"""Parsers and formatters for the human-friendly sizes and durations used in ``mlxd.toml``.

Parsers raise only ``ValueError`` (pydantic turns that into a validation error with the
key path); anything else escaping a validator would crash the loader instead.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

_SIZE = re.compile(r"\s*(\d+)(?:\.(\d+))?\s*([KMGT]i?B|B)?\s*", re.IGNORECASE | re.ASCII)
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
#: Units ``format_size`` tries, largest first; binary ones win ties (they read better for memory).
_SIZE_NAMES = [("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)]
_SIZE_NAMES_DECIMAL = [("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)]
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", re.ASCII)
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: Below 2**53 whole seconds are exact floats, so a d/h/m/s breakdown parses back exactly.
_EXACT_SECONDS = 2**53

FOREVER = float("inf")


def parse_size(value: object) -> int:
    """Parse ``"24GB"``, ``"512MiB"`` or a byte count into bytes (fractions of a byte round down)."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string such as '2GB'")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a size; use e.g. '512MB', '2GiB' or a byte count")
    whole, fraction, unit = match.groups()
    factor = _UNITS[(unit or "b").lower()]
    # Integer arithmetic: floats would turn "4.35GB" into 4349999999 bytes.
    size = int(whole) * factor
    if fraction:
        size += int(fraction) * factor // 10 ** len(fraction)
    return size


def format_size(size: int) -> str:
    """The shortest exact spelling of a byte count that ``parse_size`` reads back."""
    units = (*_SIZE_NAMES, *_SIZE_NAMES_DECIMAL) if size > 0 else ()
    spellings = [f"{size // f}{name}" for name, f in units if size % f == 0] + [str(size)]
    return min(spellings, key=len)  # min() keeps the first of equals: binary units win ties


def parse_duration(value: object) -> float:
    """Parse ``"15m"``, ``"1h30m"``, ``"0"``, ``"forever"`` or seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be seconds or a string such as '15m'")
    if isinstance(value, int | float):
        if math.isnan(value) or value < 0:
            raise ValueError("a duration must be a non-negative number of seconds")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration; use e.g. '30s', '15m' or 'forever'")
    text = value.strip().lower()
    if text in {"forever", "never", "-1"}:
        return FOREVER
    if re.fullmatch(r"\d+(\.\d+)?", text, re.ASCII):
        seconds = float(text)
    else:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{value!r} is not a duration; use e.g. '30s', '15m', '2h', '0' or 'forever'")
        seconds = sum(float(n) * _SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is too long a duration; use 'forever' for no limit")
    return seconds


def format_duration(seconds: float) -> str:
    """The spelling of a duration that ``parse_duration`` reads back exactly (``"1h30m"``)."""
    if seconds == FOREVER:
        return "forever"
    if seconds.is_integer() and 0 < seconds < _EXACT_SECONDS:
        rest = int(seconds)
        parts = []
        for unit, factor in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
            count, rest = divmod(rest, factor)
            if count:
                parts.append(f"{count}{unit}")
        return "".join(parts)
    # Plain decimal notation (never exponent notation, which the parser rejects).
    text = format(Decimal(repr(seconds)), "f")
    return "0" if seconds == 0 else f"{text}s"
