"""Warm a freshly loaded model up before anyone waits for it.

On a GPU, MLX compiles many kernels the first time they run, for each data type: the
sampler's random numbers, argmax, sorting for top-p, and the model's own forward. The
first request after a start paid it all (14 to 30 seconds to the first token on MLX's
CUDA backend, measured with ``python -m bench --gpu``). A load now runs one tiny request
through every path a request can take (a lone decode, a batch of two, each sampler kind)
and throws it away, so that cost is paid while the model loads.

On CUDA, prefills of some widths (the longest prompt less its last token) still compiled
a kernel the first time (~0.5 s each on an H100 with nothing cached, ``python -m
bench.probe DIR --first-round``): widths 38, 40 and 44 did, 37, 39, 41, 45 and 51 did not,
nor 42 and 46 once 38 had, which fits kernels specialised by how the width aligns (odd, or
a multiple of 2, 4, 8). So there the warm-up also prefills one batch of each alignment up
to 16, padded and not. Metal's kernels come built, so a Mac skips those.

Last, a batch that changes while it decodes: the longest row leaves it first (the rows that
stay are gathered, their common left padding cut off, and they decode on), and a row joins
it (prefilled beside the decoding rows, then merged into them). On CUDA the first decode
step after rows left a batch took 2.6-4.1 s, once in every daemon of five 64-client runs
(the daemon's timeline, ``python -m bench --gpu``): kernels for that path were compiled
then. After this warm-up it took 42 ms (``python -m bench.probe DIR --rows-change``: 3,118
ms without). Joining did not stall there; it is warmed while at it. CUDA only, as the
alignments: Metal's kernels come built.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from mlxd.runtime.mlx.sampling import for_one_row, make_sampler
from mlxd.runtime.requests import SamplingParams

log = logging.getLogger("mlxd.runtime")

#: Every kind of sampler a request can get: greedy, plain, filtered, seeded.
_SAMPLERS = (
    SamplingParams(),
    SamplingParams(temperature=0.7),
    SamplingParams(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05),
    SamplingParams(temperature=0.7, seed=0),
)


#: Prefill widths of each alignment but odd (the first batch below is odd).
ALIGNED_WIDTHS = (2, 4, 8, 16)


def warm_up_batches(vocab_size: int, *, cuda: bool) -> list[list[list[int]]]:
    """The throwaway batches the warm-up prefills: two prompts of 4 and 3 tokens (an odd
    width, padded); on CUDA also, for each of ``ALIGNED_WIDTHS``, two prompts of that width
    plus one token, and the same with the second a token shorter (padded)."""
    batches = [[_prompt(4, vocab_size), _prompt(3, vocab_size)]]
    if cuda:
        for width in ALIGNED_WIDTHS:
            prompt = _prompt(width + 1, vocab_size)
            batches += [[prompt, prompt], [prompt, prompt[:-1]]]
    return batches


def changing_batch(vocab_size: int) -> tuple[list[list[int]], list[int], list[int]]:
    """The batch whose rows change as it decodes: its prompts and ``max_tokens``, the longest
    prompt leaving first, and the prompt that joins after its first step."""
    prompts = [_prompt(5, vocab_size), _prompt(3, vocab_size), _prompt(3, vocab_size)]
    return prompts, [2, 5, 5], _prompt(4, vocab_size)


def _prompt(length: int, vocab_size: int) -> list[int]:
    """Token ids 1, 2, … ``length``, wrapped into the vocabulary."""
    return [t % vocab_size for t in range(1, length + 1)]


def warm_up(model: Any, generator: Any, vocab_size: int, *, changes: bool = True) -> None:
    """Run throwaway decodes through ``model`` alone and through its ``BatchGenerator``
    (``changes``: on CUDA, also the batch whose rows change as it decodes)."""
    started = time.perf_counter()
    logits = model(mx.array([_prompt(4, vocab_size)]), cache=make_prompt_cache(model))[:, -1, :]
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    samplers = [make_sampler(params) for params in _SAMPLERS]
    mx.eval([sampler(logprobs) for sampler in samplers])
    with mx.stream(generator.stream):  # a lone sequence's draw, traced where decoders draw (per stream)
        mx.eval([for_one_row(sampler)(logprobs) for sampler in samplers])
    mx.eval(mx.argpartition(-logprobs[0], kth=0))  # top logprobs
    cuda = mx.cuda.is_available()
    for batch in warm_up_batches(vocab_size, cuda=cuda):
        _decode(generator, set(generator.insert(batch, max_tokens=[2] * len(batch))))
    if changes and cuda:
        prompts, max_tokens, joining = changing_batch(vocab_size)
        left = _decode(generator, set(generator.insert(prompts, max_tokens=max_tokens)), until_first=True)
        _decode(generator, left | set(generator.insert([joining], max_tokens=[2])))
    log.debug("warmed the model up in %.2fs", time.perf_counter() - started)


def _decode(generator: Any, left: set[int], *, until_first: bool = False) -> set[int]:
    """Step ``generator`` until the sequences ``left`` have all finished (``until_first``: until
    the first tokens came); returns those still decoding. A sequence can end at any token,
    its first included (an end token)."""
    while left:
        _, responses = generator.next()
        left -= {r.uid for r in responses if r.finish_reason is not None}
        if until_first and responses:
            break
    return left
