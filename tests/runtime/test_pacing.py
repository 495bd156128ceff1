"""The embedding pacer: while anything decodes, a batch settles at the size whose time is
its share of one decode step (``Pacer.SHARE``), even when a forward pass has a fixed cost
larger than its per-token cost."""

from __future__ import annotations

import pytest

from mlxd.runtime.mlx.pacing import (
    IDLE_EMBED_TOKENS,
    MAX_IDLE_EMBED_TOKENS,
    DecodeClock,
    Pacer,
    PassCost,
)

CAP, IDLE = 256, IDLE_EMBED_TOKENS


def _settle(pacer: Pacer, step: float, fixed: float, per_token: float, rounds: int = 60) -> list[int]:
    """Budgets the pacer asks for over ``rounds`` batches of a model whose batch of ``n``
    tokens takes ``fixed + per_token * n`` seconds."""
    budgets = []
    for _ in range(rounds):
        tokens = pacer.budget(True, step, CAP)
        budgets.append(tokens)
        pacer.embedded(tokens, fixed + per_token * tokens, step, True)
    return budgets


@pytest.mark.parametrize(
    ("step", "fixed", "per_token"),
    [
        (0.020, 0.001, 0.0001),  # a real model: large step, small fixed cost
        (0.0015, 0.0005, 0.00009),  # the tiny test model on a CPU: fixed cost near the share
        (0.010, 0.0, 0.0005),  # cost in proportion to tokens
    ],
)
def test_a_batch_settles_at_its_share_of_a_decode_step(step: float, fixed: float, per_token: float) -> None:
    budgets = _settle(Pacer(), step, fixed, per_token)
    settled = budgets[-1]
    assert budgets[-10:] == [settled] * 10
    # The largest batch that fits in its share (never below one token, never above the cap).
    share = Pacer.SHARE * step
    fits = max(1, min(CAP, int((share - fixed) / per_token)))
    assert abs(settled - fits) <= 1
    assert fixed + per_token * settled <= share * 1.25 or settled == 1


def test_a_batch_takes_half_a_step() -> None:
    """Half, not all of it: a whole step doubled a stream's gap by design."""
    assert Pacer.SHARE == 0.5
    settled = _settle(Pacer(), step=0.020, fixed=0.0, per_token=0.0001)[-1]
    assert settled == 100


def test_a_first_batch_is_small_and_one_token_always_runs() -> None:
    pacer = Pacer()
    assert pacer.budget(True, None, CAP) == Pacer.MIN_TOKENS == 1
    # A forward pass slower than a whole step still makes progress, a token at a time.
    assert _settle(pacer, step=0.001, fixed=0.005, per_token=0.001)[-1] == 1


def test_without_decoding_a_batch_takes_the_idle_budget() -> None:
    pacer = Pacer()
    pacer.embedded(100, 1.0, 0.01, True)
    assert pacer.budget(False, 0.001, CAP) == IDLE
    assert pacer.budget(False, None, 16384) == 16384


def test_idle_batches_do_not_make_the_first_ones_beside_a_stream_overshoot() -> None:
    """A burst that ran alone in 8,192-token batches (fixed cost spread thin) must not size
    the first batches once a stream starts: they start small and grow to one step."""
    step, fixed, per_token = 0.0015, 0.0005, 0.00001
    pacer = Pacer()
    for _ in range(20):
        pacer.embedded(IDLE, fixed + per_token * IDLE, None, False)
    assert pacer.budget(True, step, CAP) == Pacer.MIN_TOKENS
    budgets = _settle(pacer, step, fixed, per_token)
    share = Pacer.SHARE * step
    assert all(fixed + per_token * tokens <= share for tokens in budgets)  # from below
    fits = int((share - fixed) / per_token)  # a forward pass's fixed cost near the share
    assert fits - 3 <= budgets[-1] <= fits  # no longer stuck at one token


def test_one_cheap_batch_at_most_doubles_the_next() -> None:
    """A piece of an encoder's layer that costs next to nothing (a norm) must not make the
    next batch many steps long."""
    pacer = Pacer()
    settled = _settle(pacer, step=0.010, fixed=0.001, per_token=0.0001)[-1]
    pacer.embedded(settled, 1e-6, 0.010, True)
    assert pacer.budget(True, 0.010, 10**6) <= 2 * settled


def test_a_size_learned_beside_long_steps_shrinks_beside_short_ones() -> None:
    pacer = Pacer()
    settled = _settle(pacer, step=0.020, fixed=0.0, per_token=0.0001)[-1]
    assert settled == 100
    assert pacer.budget(True, 0.002, CAP) == 10  # a tenth of the step: a tenth of the size
    assert pacer.budget(True, 0.040, CAP) == 100  # longer steps: it grows by learning


def test_the_decode_clock_is_a_running_average() -> None:
    clock = DecodeClock()
    assert clock.step is None
    clock.decoded(0.010)
    assert clock.step == pytest.approx(0.010)
    for _ in range(40):
        clock.decoded(0.002)
    assert clock.step == pytest.approx(0.002, rel=0.01)


def _learned(
    fixed: float, per_token: float, sizes: list[int], outliers: dict[int, float] | None = None
) -> int:
    """The idle budget after batches of ``sizes`` tokens, each taking ``fixed + per_token *
    tokens`` seconds (plus ``outliers[i]`` for the i-th)."""
    cost = PassCost()
    for i, tokens in enumerate(sizes):
        cost.ran(tokens, fixed + per_token * tokens + (outliers or {}).get(i, 0.0))
    return cost.idle_budget


#: What an idle worker sees: one-input requests, a request of 32, bursts split at the budget
#: (twice PassCost.REFIT batches: fitted twice).
MIXED = [40, 60, 90, 30, 1300, 2600, 8192, 8192, 3100, 50, 70, 8192, 45, 2000, 8192, 80]


def test_an_accelerators_large_fixed_cost_lets_an_idle_batch_grow() -> None:
    # A 12-layer encoder on a GPU: ~2.5 ms a pass, ~1.5 us a token (one batch of 256 inputs,
    # 24,320 padded tokens, ran 4 ms faster than three batches of at most 8,192).
    budget = _learned(0.0025, 1.5e-6, MIXED)
    assert budget == int(PassCost.FIXED_SHARE * 0.0025 / 1.5e-6)
    assert 24_320 <= budget <= MAX_IDLE_EMBED_TOKENS
    # The largest batch it allows takes about FIXED_SHARE + 1 fixed parts.
    assert 0.0025 + 1.5e-6 * budget == pytest.approx(0.0025 * (PassCost.FIXED_SHARE + 1), rel=1e-3)


def test_on_a_cpu_a_token_costs_too_much_to_grow_past_the_default() -> None:
    # The tiny model on two cores: ~0.2 ms a pass, ~0.6 ms a token.
    assert _learned(0.0002, 0.0006, MIXED) == IDLE_EMBED_TOKENS
    assert _learned(0.0, 0.0006, MIXED) == IDLE_EMBED_TOKENS


def test_the_growth_is_bounded() -> None:
    assert _learned(0.050, 1e-7, MIXED) == MAX_IDLE_EMBED_TOKENS


def test_a_few_slow_first_calls_do_not_move_the_estimate() -> None:
    """New shapes build kernels (a GPU) and a pause can hit any batch: outliers of 20 ms on
    about a third of the batches leave the CPU's estimate where it was, and the GPU's near it."""
    slow = {0: 0.020, 3: 0.020, 4: 0.020, 9: 0.020, 14: 0.020}
    assert _learned(0.0002, 0.0006, MIXED, slow) == IDLE_EMBED_TOKENS
    gpu = _learned(0.0025, 1.5e-6, MIXED, slow)
    assert abs(gpu - PassCost.FIXED_SHARE * 0.0025 / 1.5e-6) < 0.1 * gpu


@pytest.mark.parametrize(
    "sizes",
    [
        [40, 60, 90, 30],  # one-input requests only: no large batch to tell a token's cost
        [8192, 8192, 8000, 8192, 7000],  # bursts only: too alike in size
        [],
    ],
)
def test_without_batches_of_telling_sizes_the_default_holds(sizes: list[int]) -> None:
    assert _learned(0.0025, 1.5e-6, sizes * 8) == IDLE_EMBED_TOKENS  # fitted several times


def test_idle_batches_teach_the_cost_and_batches_beside_a_stream_do_not() -> None:
    pacer = Pacer()
    for tokens in MIXED:
        pacer.embedded(tokens, 0.0025 + 1.5e-6 * tokens, 0.010, True)  # beside a stream
    assert pacer.budget(False, None, CAP) == IDLE_EMBED_TOKENS
    for tokens in MIXED:
        pacer.embedded(tokens, 0.0025 + 1.5e-6 * tokens, None, False)
    assert pacer.budget(False, None, CAP) == pacer.cost.idle_budget > IDLE_EMBED_TOKENS


def test_the_line_is_fitted_every_few_batches() -> None:
    cost = PassCost()
    for tokens in MIXED[: PassCost.REFIT - 1]:
        cost.ran(tokens, 0.0025 + 1.5e-6 * tokens)
    assert cost.idle_budget == IDLE_EMBED_TOKENS  # not fitted yet
    cost.ran(8192, 0.0025 + 1.5e-6 * 8192)
    assert cost.idle_budget > IDLE_EMBED_TOKENS
