"""A lone sequence's compiled draw against the plain operations every batch uses.

Pure MLX, no model: rows of random log-probabilities drawn from one random state by both,
for each kind of unseeded sampler and both data types a model's logits come in.
"""

from __future__ import annotations

from typing import Any

import pytest

from mlxd.runtime.requests import SamplingParams

pytestmark = [pytest.mark.mlx]

UNSEEDED = [
    SamplingParams(temperature=0.7),
    SamplingParams(temperature=1.3, top_p=0.9, min_p=0.02, top_k=40),
    SamplingParams(temperature=1.0, xtc_probability=0.5, xtc_threshold=0.05),
]


def _rows(dtype: Any, count: int = 40, vocab: int = 300) -> list[Any]:
    import mlx.core as mx

    mx.random.seed(0)
    rows = [mx.random.normal((1, vocab)) * 3 for _ in range(count)]
    return [(row - mx.logsumexp(row, axis=-1, keepdims=True)).astype(dtype) for row in rows]


@pytest.mark.parametrize("params", UNSEEDED)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_one_row_draw_gives_the_plain_draws_tokens(params: SamplingParams, dtype: str) -> None:
    import mlx.core as mx

    from mlxd.runtime.mlx.sampling import for_one_row, make_sampler

    rows = _rows(getattr(mx, dtype))
    sampler = make_sampler(params, xtc_special=(3,))
    lone = for_one_row(sampler)
    assert lone is not sampler
    mx.random.seed(11)
    plain = [int(sampler(row).item()) for row in rows]
    mx.random.seed(11)
    compiled = [int(lone(row).item()) for row in rows]
    assert compiled == plain
    assert len(set(plain)) > 10  # random rows, really sampled


def test_greedy_and_seeded_samplers_stay_as_they_are() -> None:
    from mlxd.runtime.mlx.sampling import for_one_row, make_sampler

    for params in (SamplingParams(), SamplingParams(temperature=0.8, seed=5)):
        sampler = make_sampler(params)
        assert for_one_row(sampler) is sampler


def test_a_new_temperature_reuses_the_trace_and_keeps_its_own_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The temperature is the compiled draw's input, not a constant baked into it: two
    temperatures in turn share one trace, and each draws what its plain sampler draws."""
    import mlx.core as mx

    from mlxd.runtime.mlx import sampling
    from tests.runtime.helpers import count_draw_traces

    rows = _rows(mx.float32, count=1, vocab=301) * 40  # one row again and again (a shape of its own)
    cold, hot = (sampling.make_sampler(SamplingParams(temperature=t)) for t in (0.2, 5.0))
    mx.random.seed(3)
    plain = [(int(cold(row).item()), int(hot(row).item())) for row in rows]
    traces = count_draw_traces(monkeypatch)
    mx.random.seed(3)
    lone = [
        (int(sampling.for_one_row(cold)(row).item()), int(sampling.for_one_row(hot)(row).item()))
        for row in rows
    ]
    assert lone == plain
    assert traces == [(1, 301)]  # traced once, for both temperatures and all 80 draws
    # From one row a cold draw keeps to its likeliest tokens, a hot one wanders: the scales differ.
    assert len({c for c, _ in plain}) < len({h for _, h in plain})
