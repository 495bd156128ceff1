"""Embeddings as JSON numbers: float32's shortest decimals, read back as the very same values."""

from __future__ import annotations

import json

import msgspec
import numpy as np

from mlxd.http.embeddings import as_floats


def test_every_float32_reads_back_bit_for_bit() -> None:
    bits = np.random.default_rng(0).integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)][:150_000].reshape(-1, 1000)  # every exponent, both signs
    edges = np.array(
        [[0.0, -0.0, 1.0, -1.0, 0.1, 0.99999994, 1e-45, 1.1754944e-38, 3.4028235e38, -3.4028235e38]],
        dtype=np.float32,
    )
    for vectors in (values, edges):
        back = np.array(json.loads(msgspec.json.encode(as_floats(vectors))), dtype=np.float32)
        assert back.shape == vectors.shape
        assert np.array_equal(back.view(np.uint32), vectors.view(np.uint32))


def _digits(number: str) -> int:
    """Significant digits of a JSON number."""
    return len(number.lstrip("-").split("e")[0].replace(".", "").strip("0"))


def test_each_value_is_float32s_shortest_decimal() -> None:
    vectors = np.random.default_rng(1).standard_normal((4, 1024)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = as_floats(vectors)
    short = msgspec.json.encode(rows)
    assert len(short) < 0.7 * len(msgspec.json.encode(vectors.tolist()))  # float64's shortest forms
    for row, values in zip(rows, vectors, strict=True):
        numbers = bytes(row).decode().strip("[]").split(",")
        # numpy's repr of a float32 is its shortest round-tripping decimal
        assert [_digits(n) for n in numbers] == [_digits(repr(float(str(v)))) for v in values]
        assert max(_digits(n) for n in numbers) <= 9


def test_rows_that_are_not_contiguous_in_memory_are_written_whole() -> None:
    vectors = np.arange(24, dtype=np.float32).reshape(3, 8)[:, ::2]  # each row strided
    assert json.loads(msgspec.json.encode(as_floats(vectors))) == vectors.tolist()
