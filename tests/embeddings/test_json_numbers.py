"""Embeddings as JSON numbers: short, and read back as the very same float32 values."""

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
        assert np.array_equal(back.view(np.uint32), vectors.view(np.uint32))


def test_unit_vectors_take_nine_digits_not_seventeen() -> None:
    vectors = np.random.default_rng(1).standard_normal((4, 1024)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    short = msgspec.json.encode(as_floats(vectors))
    full = msgspec.json.encode(vectors.tolist())
    assert len(short) < 0.7 * len(full)
    mantissas = [
        repr(abs(x)).split("e")[0].replace(".", "").strip("0") for row in as_floats(vectors) for x in row
    ]
    assert max(len(m) for m in mantissas) == 9
