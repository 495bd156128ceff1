"""The prompt cache's bookkeeping on small hand-made KV caches: which entry a prompt finds,
how much of it is reused, what is kept and what is evicted. No model runs."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache

from mlxd.runtime.mlx.prompt_cache import MIN_REUSE, MIN_STORE, SHORT_REUSE, PromptCache

pytestmark = [pytest.mark.mlx]


def layers(tokens: list[int], count: int = 2) -> list[Any]:
    """Small KV caches holding ``tokens`` (one head of width 2 per layer)."""
    out = []
    for _ in range(count):
        cache = KVCache()
        cache.update_and_fetch(mx.zeros((1, 1, len(tokens), 2)), mx.zeros((1, 1, len(tokens), 2)))
        out.append(cache)
    return out


def seq(start: int, length: int) -> list[int]:
    return list(range(start, start + length))


def test_the_longest_shared_prefix_is_found_and_one_token_is_left_to_run() -> None:
    cache = PromptCache(10**9)
    long, other = seq(0, 100), seq(0, 70) + seq(500, 30)
    cache.store(long, layers(long), min_tokens=MIN_REUSE)
    cache.store(other, layers(other), min_tokens=MIN_REUSE)
    found, reused = cache.lookup([*seq(0, 90), 999])
    assert reused == 90
    assert found is not None
    assert all(layer.offset == 90 for layer in found)
    # The very prompt an entry holds still leaves its last token to run through the model.
    assert cache.lookup(long)[1] == 99
    assert cache.hits == 2


def test_a_hit_is_a_trimmed_copy_and_the_entry_is_unchanged() -> None:
    cache = PromptCache(10**9)
    tokens = seq(0, 80)
    stored = layers(tokens)
    cache.store(tokens, stored, min_tokens=MIN_REUSE)
    found, reused = cache.lookup([*seq(0, 40), 7, 7])
    assert reused == 40
    assert found is not None
    assert found[0] is not stored[0]
    assert stored[0].offset == 80


def test_a_short_opening_is_reused_from_the_latest_entry_with_the_same_first_tokens() -> None:
    cache = PromptCache(10**9)
    first = seq(0, 40)
    cache.store(first, layers(first), min_tokens=MIN_REUSE)
    # Shares only the template's opening (fewer than MIN_REUSE tokens) with the entry.
    prompt = seq(0, SHORT_REUSE + 3) + seq(900, 20)
    assert cache.lookup(prompt)[1] == SHORT_REUSE + 3
    assert cache.lookup(seq(0, SHORT_REUSE - 1) + seq(900, 20)) == (None, 0)


def test_an_entry_that_extends_another_replaces_it() -> None:
    cache = PromptCache(10**9)
    turn1, turn2 = seq(0, 64), seq(0, 96)
    cache.store(turn1, layers(turn1))
    cache.store(turn2, layers(turn2))
    assert len(cache) == 1
    assert cache.bytes == sum(layer.nbytes for layer in layers(turn2))


def test_sequences_cut_out_of_a_batch_are_kept_from_min_store_tokens() -> None:
    cache = PromptCache(10**9)
    short = seq(0, MIN_STORE - 1)
    cache.store(short, layers(short))
    assert len(cache) == 0
    cache.store(short, layers(short), min_tokens=MIN_REUSE)  # decoded alone: kept
    assert len(cache) == 1


def test_the_byte_budget_evicts_the_least_recently_used_and_resize_shrinks_now() -> None:
    one = sum(layer.nbytes for layer in layers(seq(0, 64)))
    cache = PromptCache(3 * one)
    for start in (0, 1000, 2000):
        cache.store(seq(start, 64), layers(seq(start, 64)))
    cache.lookup(seq(0, 64))  # the oldest becomes the most recently used
    cache.store(seq(3000, 64), layers(seq(3000, 64)))
    assert len(cache) == 3
    assert cache.lookup(seq(1000, 64)) == (None, 0)  # evicted
    cache.resize(one)
    assert len(cache) == 1
    assert cache.bytes <= one
    assert cache.lookup(seq(3000, 64))[1] == 63  # the newest survived
    cache.resize(0)
    assert (len(cache), cache.bytes) == (0, 0)
    cache.store(seq(0, 64), layers(seq(0, 64)))
    assert len(cache) == 0  # a zero budget keeps nothing


def test_a_cache_stored_later_is_found_by_the_next_lookup() -> None:
    """Stored once the pass's events went out, or by a lookup in the same pass (a request the
    image gate releases when another one ends)."""
    cache = PromptCache(10**9)
    tokens = seq(0, 100)
    cache.store_later(tokens, layers(tokens))
    assert len(cache) == 0
    assert cache.lookup([*tokens, 1])[1] == 100
    assert len(cache) == 1
    cache.store_later(seq(500, 100), layers(seq(500, 100)))
    cache.store_pending()
    assert len(cache) == 2
    cache.store_pending()  # nothing left to store
    assert len(cache) == 2


def test_stored_later_as_stored_now_a_short_batch_sequence_is_not_kept() -> None:
    cache = PromptCache(10**9)
    short = seq(0, 40)  # under MIN_STORE, over MIN_REUSE
    cache.store_later(short, layers(short))
    cache.store_pending()
    assert len(cache) == 0
    cache.store_later(short, layers(short), min_tokens=MIN_REUSE)  # decoded alone: kept
    cache.store_pending()
    assert len(cache) == 1


def test_the_rows_a_pass_finished_are_materialised_in_one_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each evaluation waits on the device: a batch's rows ending together are evaluated at once."""
    evaluated: list[int] = []
    real_eval = mx.eval

    def counting_eval(arrays: list[Any]) -> None:
        evaluated.append(len(arrays))
        real_eval(arrays)

    monkeypatch.setattr("mlxd.runtime.mlx.prompt_cache.mx.eval", counting_eval)
    cache = PromptCache(10**9)
    for start in (0, 1000, 2000):
        cache.store_later(seq(start, 80), layers(seq(start, 80)))
    cache.store_later(seq(3000, 40), layers(seq(3000, 40)))  # too short to keep: not evaluated
    cache.store_pending()
    assert len(cache) == 3
    assert evaluated == [3 * 2]  # three rows of two layers, in one call
    cache.store_pending()  # a pass that finished nothing evaluates nothing
    assert evaluated == [3 * 2]
