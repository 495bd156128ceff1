"""Sizes and durations: the spellings users write, exact round trips, only ValueError on junk."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlxd.config.units import FOREVER, format_duration, format_size, parse_duration, parse_size

UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24GB", 24 * 10**9),
        ("512MiB", 512 * 2**20),
        (" 2 gib ", 2 * 2**30),
        ("4.35GB", 4_350_000_000),  # a float product would give 4349999999
        ("1.5KiB", 1536),
        ("1.1KiB", 1126),  # fractions of a byte round down
        ("4194304", 4194304),
        (4194304, 4194304),
        (2.0e9, 2_000_000_000),
    ],
)
def test_parse_size_examples(text: str | int | float, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "GB", "12 parsecs", "-1GB", "1e9", -1, True, 1.5, None, [1], "１GB"])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", 900.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("500ms", 0.5),
        ("0", 0.0),
        ("forever", FOREVER),
        ("Never", FOREVER),
        ("-1", FOREVER),
        (30, 30.0),
        (0.25, 0.25),
        (" 45s ", 45.0),
    ],
)
def test_parse_duration_examples(text: str | float, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "bad", ["", "15 m", "1h 30m", "m", "-5", "1y", "9" * 400, -1, math.nan, False, None, {}]
)
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"), [(900.0, "15m"), (5400.0, "1h30m"), (0.0, "0"), (0.5, "0.5s"), (FOREVER, "forever")]
)
def test_format_duration_examples(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"), [(4 * 2**20, "4MiB"), (2 * 10**9, "2GB"), (1536, "1536"), (0, "0")]
)
def test_format_size_examples(size: int, text: str) -> None:
    assert format_size(size) == text


@given(st.integers(min_value=0, max_value=10**30), st.sampled_from(sorted(UNITS)), st.booleans())
def test_size_with_any_unit_is_exact(number: int, unit: str, lower: bool) -> None:
    spelled = f"{number}{unit.lower() if lower else unit}"
    assert parse_size(spelled) == number * UNITS[unit]


@given(st.integers(min_value=0, max_value=2**80))
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size)) == size


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=True))
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


JUNK = st.one_of(
    st.text(),
    st.text(alphabet="0123456789.kKmMgGtTiIbBsShHdD %-_ ", max_size=12),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(JUNK)
def test_parse_size_only_raises_value_error(value: object) -> None:
    try:
        result = parse_size(value)
    except ValueError:
        return
    assert isinstance(result, int)
    assert result >= 0


@given(JUNK)
def test_parse_duration_only_raises_value_error(value: object) -> None:
    try:
        result = parse_duration(value)
    except ValueError:
        return
    assert isinstance(result, float)
    assert result >= 0
    assert not math.isnan(result)
