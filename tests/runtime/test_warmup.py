"""The warm-up at load: which batches it prefills, and that each runs through mlx-lm's
``BatchGenerator`` to the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlxd.runtime.mlx.warmup import ALIGNED_WIDTHS, changing_batch, warm_up, warm_up_batches

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


def warmed_up(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, list[Any]]:
    """The tiny model warmed up through a ``BatchGenerator``; the prompts each insert got."""
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
    warm_up(model, generator, model.args.vocab_size)
    return model, generator, inserted


def test_every_batch_runs_through_the_generator(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlx.core as mx

    monkeypatch.setattr(mx.cuda, "is_available", lambda: True)  # the CUDA batches, on this CPU
    model, generator, inserted = warmed_up(tiny_model_dir, monkeypatch)
    prompts, _, joining = changing_batch(model.args.vocab_size)
    assert inserted == [*warm_up_batches(model.args.vocab_size, cuda=True), prompts, [joining]]
    assert generator.next()[1] == []  # each batch ran to its end: nothing is left decoding


def test_off_cuda_the_warm_up_has_no_changing_batch(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _, inserted = warmed_up(tiny_model_dir, monkeypatch)  # on this CPU
    assert inserted == warm_up_batches(model.args.vocab_size, cuda=False)


def test_a_row_joins_a_decoding_batch_and_one_leaves_while_others_decode_on(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The paths whose first use stalled a GPU for seconds: prompts prefilled beside decoding
    rows and merged into them, rows gathered out of a batch that then decodes on."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator, GenerationBatch
    from mlx_lm.utils import load

    events: list[tuple[str, int, int]] = []  # (what, rows before, rows after)
    extend, filter_, next_ = GenerationBatch.extend, GenerationBatch.filter, GenerationBatch.next

    def extended(self: Any, batch: Any) -> None:
        events.append(("join", len(self.uids), len(self.uids) + len(batch.uids)))
        extend(self, batch)

    def filtered(self: Any, keep: list[int]) -> None:
        events.append(("leave", len(self.uids), len(keep)))
        filter_(self, keep)

    def stepped(self: Any) -> Any:
        if self.uids:
            events.append(("step", len(self.uids), len(self.uids)))
        return next_(self)

    monkeypatch.setattr(GenerationBatch, "extend", extended)
    monkeypatch.setattr(GenerationBatch, "filter", filtered)
    monkeypatch.setattr(GenerationBatch, "next", stepped)
    monkeypatch.setattr(mx.cuda, "is_available", lambda: True)  # the CUDA batches, on this CPU
    model, _ = load(str(tiny_model_dir))
    warm_up(model, BatchGenerator(model, stop_tokens=[]), model.args.vocab_size)
    joined = [i for i, (what, before, _) in enumerate(events) if what == "join" and before > 0]
    left = [i for i, (what, _, after) in enumerate(events) if what == "leave" and after > 0]
    assert joined, events
    assert left, events
    assert any(what == "step" for what, _, _ in events[left[0] + 1 :])  # and it decodes on


def test_a_lone_sequence_draws_through_the_trace_the_warm_up_made(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLX keeps a compiled function's traces per stream: the warm-up traces the one-row draw
    on the stream the decoders draw on, so the first lone request traces nothing."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.utils import load

    from mlxd.runtime.mlx import sampling
    from mlxd.runtime.mlx.solo import SoloDecoder
    from mlxd.runtime.requests import SamplingParams
    from tests.runtime.helpers import count_draw_traces, run_alone

    model, _ = load(str(tiny_model_dir))
    stream = mx.new_stream(mx.default_device())  # traced on nowhere yet
    generator = BatchGenerator(model, stop_tokens=[], stream=stream)
    warm_up(model, generator, model.args.vocab_size)  # before counting: it may trace plain draws too
    traces = count_draw_traces(monkeypatch)
    decoder = SoloDecoder(
        model,
        [1, 2, 3, 4, 5],
        make_prompt_cache(model),
        [],
        sampler=sampling.make_sampler(SamplingParams(temperature=0.9, top_p=0.95)),
        processors=[],
        max_tokens=8,
        stop_tokens=frozenset(),
        prefill_step_size=256,
        stream=stream,
    )
    assert len(run_alone(decoder)) == 8
    assert traces == []
    # The count does see a trace: another stream has none yet.
    with mx.stream(mx.new_stream(mx.default_device())):
        mx.eval(sampling.for_one_row(decoder.sampler)(mx.zeros((1, model.args.vocab_size))))
    assert traces == [(1, model.args.vocab_size)]


@pytest.mark.timeout(60)
def test_the_warm_up_ends_when_every_row_ends_at_its_first_token(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose warm-up rows all draw an end token at once must still load (an earlier
    warm-up waited for the rows that had ended at their first token, for ever)."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.utils import load

    monkeypatch.setattr(mx.cuda, "is_available", lambda: True)  # the changing batch too

    model, _ = load(str(tiny_model_dir))
    vocab = model.args.vocab_size
    generator = BatchGenerator(model, stop_tokens=[[t] for t in range(vocab)])  # every token ends a row
    warm_up(model, generator, vocab)
    assert generator.next()[1] == []
