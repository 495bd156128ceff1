"""Batch prefills padded to a few widths (on CUDA): the widths, and that padding changes no
token and no log-probability beyond float noise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlxd.runtime.mlx.prefill_widths import MAX_PADDED, pad_prefill_widths, padded_width

pytestmark = pytest.mark.mlx


@pytest.mark.parametrize(
    ("width", "padded"),
    [(0, 0), (1, 16), (16, 16), (17, 32), (38, 48), (128, 128), (129, 160), (256, 256), (257, 257)],
)
def test_padded_widths(width: int, padded: int) -> None:
    assert padded_width(width) == padded


def test_padding_is_at_most_a_quarter_up_to_the_limit_and_few_shapes() -> None:
    widths = range(16, MAX_PADDED + 1)
    assert all(padded_width(w) - w < max(16, w // 4) for w in widths)
    assert len({padded_width(w) for w in range(1, MAX_PADDED + 1)}) == 12


@pytest.fixture
def padding() -> Iterator[None]:
    from mlx_lm.generate import PromptProcessingBatch

    original = PromptProcessingBatch.prompt  # exact here (no CUDA), padded on a GPU
    pad_prefill_widths(False)
    yield
    PromptProcessingBatch.prompt = original  # type: ignore[method-assign]


def _generate(model: Any, prompts: list[list[int]], widths: list[int]) -> dict[int, tuple[list[int], Any]]:
    """Greedy tokens and their log-probabilities of each prompt, decoded in one batch;
    ``widths`` gets the width of every forward pass with more than one position."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator

    class Recorded:
        def __getattr__(self, name: str) -> Any:
            return getattr(model, name)

        def __call__(self, inputs: Any, cache: Any = None) -> Any:
            if inputs.shape[1] > 1:
                widths.append(int(inputs.shape[1]))
            return model(inputs, cache=cache)

    generator = BatchGenerator(Recorded(), stop_tokens=[])
    uids = generator.insert(prompts, max_tokens=[6] * len(prompts))
    out: dict[int, tuple[list[int], Any]] = {uid: ([], []) for uid in uids}
    left = set(uids)
    while left:
        for response in generator.next()[1]:
            out[response.uid][0].append(response.token)
            out[response.uid][1].append(response.logprobs)
            if response.finish_reason is not None:
                left.discard(response.uid)
    generator.close()
    return {uid: (tokens, mx.stack(logprobs)) for uid, (tokens, logprobs) in out.items()}


@pytest.mark.parametrize("lengths", [[6, 10, 4], [9, 9]], ids=["ragged", "even"])
def test_a_padded_prefill_decodes_what_an_exact_one_does(
    tiny_model_dir: Path, padding: None, lengths: list[int]
) -> None:
    import mlx.core as mx
    from mlx_lm.utils import load

    model, _ = load(str(tiny_model_dir))
    vocab = model.args.vocab_size
    prompts = [[(7 * i + 3 * j) % vocab for j in range(n)] for i, n in enumerate(lengths)]
    exact_widths: list[int] = []
    exact = _generate(model, prompts, exact_widths)
    pad_prefill_widths(True)
    padded_widths: list[int] = []
    padded = _generate(model, prompts, padded_widths)
    assert exact_widths == [max(lengths) - 1]
    assert padded_widths == [16]
    for (tokens, logprobs), (tokens_padded, logprobs_padded) in zip(
        exact.values(), padded.values(), strict=True
    ):
        assert tokens_padded == tokens
        assert mx.allclose(logprobs_padded, logprobs, atol=1e-4).item()
