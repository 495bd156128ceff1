"""The embedding pacer: while anything decodes, a batch settles at the size whose time is
its share of one decode step (``Pacer.SHARE``), even when a forward pass has a fixed cost
larger than its per-token cost."""

from __future__ import annotations

import pytest

from mlxd.runtime.mlx.pacing import (
    IDLE_BATCH_S,
    IDLE_EMBED_TOKENS,
    IDLE_EMBED_TOKENS_MAX,
    DecodeClock,
    Pacer,
)

CAP, IDLE, IDLE_MAX = 256, IDLE_EMBED_TOKENS, IDLE_EMBED_TOKENS_MAX


def _settle(pacer: Pacer, step: float, fixed: float, per_token: float, rounds: int = 60) -> list[int]:
    """Budgets the pacer asks for over ``rounds`` batches of a model whose batch of ``n``
    tokens takes ``fixed + per_token * n`` seconds."""
    budgets = []
    for _ in range(rounds):
        tokens = pacer.budget(True, step, CAP)
        budgets.append(tokens)
        pacer.embedded(tokens, fixed + per_token * tokens, step)
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


def test_a_first_batch_is_small() -> None:
    assert Pacer().budget(True, None, CAP) == Pacer.MIN_TOKENS == 1


@pytest.mark.parametrize("fixed", [0.0025, 0.005])
def test_a_token_slower_than_the_share_runs_some_passes_and_keeps_the_share_on_average(fixed: float) -> None:
    """A 28-layer decoder on an H100: one token's forward pass costs about a decode step
    (kernel launches), more than its share. It still makes progress, a token at a time, on
    as many passes as keep the time beside the stream at its share."""
    step, passes = 0.004, 400
    budgets = _settle(Pacer(), step, fixed, 1e-6, rounds=passes)
    ran = [tokens for tokens in budgets if tokens]
    assert set(ran) == {1}
    spent = sum(fixed + 1e-6 * tokens for tokens in ran)
    assert Pacer.SHARE * step * passes - fixed <= spent <= Pacer.SHARE * step * passes + fixed
    assert budgets[0] == 1  # the first pass runs one


def test_the_bank_holds_one_share_and_resets_when_nothing_decodes() -> None:
    pacer = Pacer()
    for _ in range(50):  # passes that ran no batch (the queue was empty) bank no more than one share
        pacer.budget(True, 0.004, CAP)
    pacer.embedded(1, 0.005, 0.004)  # 3 ms in debt: the next pass (+2 ms) still is
    assert pacer.budget(True, 0.004, CAP) == 0
    assert pacer.budget(True, 0.004, CAP) == 1
    pacer.embedded(1, 0.005, 0.004)
    assert pacer.budget(False, None, CAP) == IDLE  # nothing decodes: debts are forgotten
    assert pacer.budget(True, 0.004, CAP) == 1


def test_without_decoding_a_batch_takes_the_idle_budget() -> None:
    pacer = Pacer()
    pacer.embedded(100, 1.0, 0.01)
    assert pacer.budget(False, 0.001, CAP) == IDLE
    assert pacer.budget(False, None, 16384) == 16384  # a prefill step larger than it


def _idle_budgets(pacer: Pacer, fixed: float, per_token: float, rounds: int = 12) -> list[int]:
    """Idle budgets over ``rounds`` full batches of a model whose batch of ``n`` tokens takes
    ``fixed + per_token * n`` seconds."""
    budgets = []
    for _ in range(rounds):
        tokens = pacer.budget(False, None, CAP)
        budgets.append(tokens)
        pacer.idle(tokens, fixed + per_token * tokens)
    return budgets


def test_idle_batches_grow_to_what_a_fast_accelerator_runs_in_their_time() -> None:
    # An encoder on an H100: 8,192 tokens in ~14 ms, so batches grow (each at most doubling)
    # to the largest allowed.
    assert _idle_budgets(Pacer(), fixed=0.0025, per_token=1.4e-6)[:4] == [IDLE, 2 * IDLE, IDLE_MAX, IDLE_MAX]
    # A model that runs ~150,000 tokens a second: batches of about IDLE_BATCH_S.
    settled = _idle_budgets(Pacer(), fixed=0.003, per_token=6.5e-6)[-1]
    assert IDLE < settled < IDLE_MAX
    assert 0.003 + 6.5e-6 * settled == pytest.approx(IDLE_BATCH_S, rel=0.05)
    # A Mac's GPU or a CPU, where 8,192 tokens take longer than that: they stay at 8,192.
    assert set(_idle_budgets(Pacer(), fixed=0.003, per_token=5e-5)) == {IDLE}


def test_a_small_idle_batch_may_lower_the_budget_never_raise_it() -> None:
    pacer = Pacer()
    learned = _idle_budgets(pacer, fixed=0.0025, per_token=1.4e-6)[-1]
    pacer.idle(80, 0.004)  # one short request: its fixed cost over few tokens says little
    assert pacer.budget(False, None, CAP) == learned
    pacer.idle(80, 1.0)  # but a batch slower than the whole budget's time is heard
    assert pacer.budget(False, None, CAP) == IDLE
    pacer.idle(IDLE, 0.001)  # and it grows back at most twofold a batch
    assert pacer.budget(False, None, CAP) == 2 * IDLE


def test_idle_batches_do_not_make_the_first_ones_beside_a_stream_overshoot() -> None:
    """A burst that ran alone in 8,192-token batches (fixed cost spread thin) must not size
    the first batches once a stream starts: they start small and grow to one step."""
    step, fixed, per_token = 0.0015, 0.0005, 0.00001
    pacer = Pacer()
    for _ in range(20):
        pacer.embedded(IDLE, fixed + per_token * IDLE, None)
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
    pacer.embedded(settled, 1e-6, 0.010)
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
