"""The warm-up at load: which batches it prefills, and that each runs through mlx-lm's
``BatchGenerator`` to the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlxd.runtime.mlx.warmup import ALIGNED_WIDTHS, warm_up, warm_up_batches

pytestmark = pytest.mark.mlx


def widths(batch: list[list[int]]) -> tuple[int, bool]:
    """The prefill's width (the longest prompt less the last token, which goes to the first
    step) and whether a row is padded."""
    return max(len(p) for p in batch) - 1, len({len(p) for p in batch}) > 1


def test_off_cuda_one_odd_padded_batch() -> None:
    assert [widths(b) for b in warm_up_batches(300, cuda=False)] == [(3, True)]


def test_on_cuda_every_alignment_with_and_without_padding() -> None:
    batches = warm_up_batches(300, cuda=True)
    seen = {widths(b) for b in batches}
    assert seen == {(3, True)} | {(w, padded) for w in ALIGNED_WIDTHS for padded in (False, True)}
    assert {w & -w for w, _ in seen} == {1, 2, 4, 8, 16}  # the largest power of two dividing each
    assert all(0 <= t < 5 for b in warm_up_batches(5, cuda=True) for p in b for t in p)  # in the vocabulary


def test_every_batch_runs_through_the_generator(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.utils import load

    model, _ = load(str(tiny_model_dir))
    generator = BatchGenerator(model, stop_tokens=[])
    inserted: list[list[list[int]]] = []
    insert = generator.insert

    def recorded(prompts: list[list[int]], **kwargs: Any) -> Any:
        inserted.append(prompts)
        return insert(prompts, **kwargs)

    monkeypatch.setattr(generator, "insert", recorded)
    monkeypatch.setattr(mx.cuda, "is_available", lambda: True)  # the CUDA batches, on this CPU
    warm_up(model, generator, model.args.vocab_size)
    assert inserted == warm_up_batches(model.args.vocab_size, cuda=True)
    assert generator.next()[1] == []  # each batch ran to its end: nothing is left decoding
