"""``python -m bench.probe MODEL_DIR``: where an accelerator spends the first call of a shape.

Diagnostics behind the GPU section of the benchmark, printed as plain lines:

- for batch sizes a continuous batch visits, the first and the second call of one decode
  step (the model forward), of mlx-lm's compiled categorical sampler and of an uncompiled
  one: a first call much slower than the second is a cost the first users of that batch
  size pay (kernel compilation, allocation);
- prompts admitted into a batch, shape by shape: what a prefill and the new rows' first
  step cost the first time a shape comes and the second;
- one stream decoded by mlx-lm's ``stream_generate`` and by mlxd's own solo decoder with
  its per-token output work (detokenizing, the output parser), in-process, so the gap
  between them is mlxd's engine-side overhead and not HTTP.

``--first-round`` instead asks what the first batches after a load still pay once mlxd's
warm-up has run: 64 rows at a prompt length, a neighbouring length, the first again, then
other row counts; then one lone stream decoded twice by mlx-lm and twice by mlxd's solo
decoder, with the steps that stalled.

``--rows-change`` instead asks what a batch whose rows change costs the first time after
mlxd's warm-up (``--without-changes``: after the warm-up without its changing batch, to
compare): 64 rows decoding, of which the 8 with the longest prompts leave early while 56
decode on, then 8 rows join the 56; twice, with new prompts, each step timed.

``--long-prompts`` instead times prefills from a short burst of 64 rows to one prompt of
16,384 tokens, each shape twice, with the peak memory they took (run with and without
``MLX_CUDA_USE_CUDNN_SDPA=0`` to weigh cuDNN's attention against MLX's unfused one).

``--rounds`` instead asks why rounds of the same work differ in speed: the host's CPU pace,
core by core and over time on one core, then identical rounds of 64 decoding rows with each
step split into building the graph, submitting it and waiting for the accelerator.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

BATCHES = (1, 2, 3, 4, 5, 8, 12, 16, 24, 31, 32, 48, 63, 64)
TOKENS = 128
TEMPERATURE = 0.7


def _timed(fn: Any, *args: Any, **kwargs: Any) -> float:
    """Seconds for ``fn(*args, **kwargs)`` and the evaluation of what it returns."""
    import mlx.core as mx

    started = time.perf_counter()
    mx.eval(fn(*args, **kwargs))
    return time.perf_counter() - started


def shapes(model: Any, vocab: int) -> None:
    """First and second call per batch size: forward, compiled and uncompiled sampling."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.sample_utils import make_sampler

    compiled = make_sampler(temp=TEMPERATURE)
    inverse = 1.0 / TEMPERATURE
    print(
        "batch | forward first/second ms | compiled sampler first/second ms | plain sampler first/second ms"
    )
    for batch in BATCHES:
        cache = make_prompt_cache(model)
        mx.eval(model(mx.zeros((batch, 16), dtype=mx.int32), cache=cache))
        step = mx.zeros((batch, 1), dtype=mx.int32)
        forward = [_timed(model, step, cache=cache) for _ in range(2)]
        logits = mx.random.normal((batch, vocab))
        mx.eval(logits)
        sample = [_timed(compiled, logits) for _ in range(2)]
        plain = [_timed(mx.random.categorical, logits * inverse) for _ in range(2)]
        cells = [f"{a * 1000:.1f}/{b * 1000:.1f}" for a, b in (forward, sample, plain)]
        print(f"{batch} | " + " | ".join(cells), flush=True)


def single(model: Any, tokenizer: Any) -> None:
    """One stream: ``stream_generate`` against mlxd's solo decoder plus its output work."""
    from mlx_lm.generate import stream_generate
    from mlx_lm.sample_utils import make_sampler

    from mlxd.runtime.mlx.sampling import make_sampler as mlxd_sampler
    from mlxd.runtime.requests import SamplingParams

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "tell me a long story"}], add_generation_prompt=True, tokenize=True
    )
    eos = frozenset(tokenizer.eos_token_ids)
    for _ in range(3):
        started = time.perf_counter()
        count = sum(
            1
            for _ in stream_generate(
                model, tokenizer, prompt, max_tokens=TOKENS, sampler=make_sampler(temp=TEMPERATURE)
            )
        )
        raw = count / (time.perf_counter() - started)
        # mlxd's own sampler, as the daemon builds it (mlx-lm's compiled one hid that mlxd
        # drew through ten uncompiled operations per token).
        steps = _solo_steps(
            model, tokenizer, prompt, TOKENS, mlxd_sampler(SamplingParams(temperature=TEMPERATURE)), eos
        )
        solo = len(steps) / sum(steps)
        print(
            f"single stream: stream_generate {raw:.1f} tok/s, mlxd solo decoder {solo:.1f} tok/s ({solo / raw:.2f}x)",
            flush=True,
        )


#: (rows, fewest and most prompt tokens) of the admissions ``admissions`` times, in order: repeats show
#: whether a shape costs more the first time, neighbours whether each new length does.
ADMISSIONS = (
    (2, 27, 27),
    (2, 27, 27),
    (2, 28, 28),
    (62, 27, 27),
    (62, 27, 27),
    (62, 20, 34),
    (62, 20, 34),
    (64, 20, 40),
    (64, 20, 40),
    (8, 30, 40),
    (8, 30, 41),
)


def _admitted(generator: Any, prompts: list[list[int]]) -> list[float]:
    """Insert ``prompts`` (3 tokens each) into ``generator`` with nothing else running; ms of
    its next three calls (the prefill, the new rows' first step, a decode step), then drain."""
    import mlx.core as mx

    generator.insert(prompts, max_tokens=[3] * len(prompts))
    times: list[float] = []
    while len(times) < 3:
        started = time.perf_counter()
        generator.next()
        mx.synchronize()
        times.append((time.perf_counter() - started) * 1000)
    while generator.next()[1]:
        pass
    return times


def admissions(model: Any, vocab: int) -> None:
    """Prompts of one length admitted into mlxd's batch while nothing else runs: the
    prefill (the generator's first call), the new rows' first step (its second) and a
    decode step (its third), each shape twice, then neighbouring lengths."""
    import random

    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from mlxd.runtime.mlx.batch import Batch  # its module keeps MLX's buffers as mlxd does

    del Batch
    from mlx_lm.generate import BatchGenerator

    generator = BatchGenerator(model, prefill_batch_size=64, completion_batch_size=64, prefill_step_size=256)
    rng = random.Random(0)
    print("rows x tokens | prefill ms | first step ms | decode step ms")
    for rows, shortest, longest in ADMISSIONS:
        lengths = [shortest if i % 2 else longest for i in range(rows)]
        prompts = [[rng.randrange(vocab) for _ in range(n)] for n in lengths]
        times = _admitted(generator, prompts)
        print(f"{rows} x {shortest}-{longest} | " + " | ".join(f"{t:.1f}" for t in times), flush=True)
    # Does evaluating an array that is ready wait for a step queued before it?
    cache = make_prompt_cache(model)
    mx.eval(model(mx.zeros((64, 16), dtype=mx.int32), cache=cache))
    ready = mx.array([1, 2])
    for _ in range(3):
        mx.async_eval(model(mx.zeros((64, 1), dtype=mx.int32), cache=cache))
        started = time.perf_counter()
        mx.eval(ready)
        waited = time.perf_counter() - started
        mx.synchronize()
        print(f"eval of a ready array behind a queued step: {waited * 1000:.2f} ms", flush=True)


FIRST_ROUND = (
    (64, 38),
    (64, 39),
    (64, 38),
    (16, 40),
    (64, 52),
    (2, 41),
    (2, 42),
    (3, 43),
    (64, 45),
    (64, 46),
    (32, 47),
    (64, 39),
    (2, 41),
)


def first_round(model: Any, vocab: int) -> None:
    """What the first batches after a load pay, after mlxd's warm-up at load: rows x prompt
    length admitted one batch at a time (a length seen before, then new ones); the first
    call of a new rows-and-length shape against a repeat says what a warm-up could still
    take off the first users."""
    import random

    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator

    from mlxd.runtime.mlx.warmup import warm_up

    generator = BatchGenerator(model, prefill_batch_size=64, completion_batch_size=64, prefill_step_size=2048)
    started = time.perf_counter()
    warm_up(model, generator, vocab)
    mx.synchronize()
    print(f"mlxd's warm-up at load: {(time.perf_counter() - started) * 1000:.0f} ms")
    rng = random.Random(0)
    print("rows x tokens | prefill ms | first step ms | decode step ms")
    for rows, length in FIRST_ROUND:
        times = _admitted(generator, [[rng.randrange(vocab) for _ in range(length)] for _ in range(rows)])
        print(f"{rows} x {length} | " + " | ".join(f"{t:.1f}" for t in times), flush=True)


def rows_change(model: Any, vocab: int, *, warm_changes: bool) -> None:
    """Two rounds of 64 rows whose longest 8 leave early and to which 8 rows then join; the
    steps after each change, the first round against the second."""
    import random

    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator

    from mlxd.runtime.mlx.warmup import warm_up

    generator = BatchGenerator(model, prefill_batch_size=64, completion_batch_size=64, prefill_step_size=2048)
    started = time.perf_counter()
    warm_up(model, generator, vocab, changes=warm_changes)
    mx.synchronize()
    print(
        f"mlxd's warm-up at load (changing batch {'on' if warm_changes else 'off'}): "
        f"{(time.perf_counter() - started) * 1000:.0f} ms"
    )
    rng = random.Random(0)
    for round_ in (1, 2):
        lengths = sorted((rng.randrange(20, 44) for _ in range(64)), reverse=True)
        prompts = [[rng.randrange(vocab) for _ in range(n)] for n in lengths]
        left = set(generator.insert(prompts, max_tokens=[6] * 8 + [24] * 56))
        phases: dict[str, list[float]] = {"64 rows": [], "56 left": [], "8 joining": []}
        phase = "64 rows"
        while left:
            tick = time.perf_counter()
            _, responses = generator.next()
            phases[phase].append((time.perf_counter() - tick) * 1000)
            left -= {r.uid for r in responses if r.finish_reason is not None}
            if phase == "64 rows" and len(left) == 56:
                phase = "56 left"  # the next step is the first after 8 rows left
            elif phase == "56 left" and len(phases[phase]) == 3:
                phase = "8 joining"
                left |= set(generator.insert(prompts[:8], max_tokens=[6] * 8))
        print(
            f"round {round_}: "
            + "; ".join(
                f"{name}: first {times[0]:.1f} ms, max {max(times):.1f} ms ({len(times)} calls)"
                for name, times in phases.items()
                if times
            ),
            flush=True,
        )


def new_lengths(model: Any, vocab: int, count: int = 24) -> None:
    """Prefills of ``count`` prompt lengths never seen before, one row each: what a new
    attention shape costs, and whether MLX gives up on its cache of them ("Cache thrashing",
    raised once misses pass twice ``MLX_CUDA_SDPA_CACHE_SIZE``)."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    costs = []
    for length in range(300, 300 + count):
        started = time.perf_counter()
        try:
            mx.eval(model(mx.zeros((1, length), dtype=mx.int32), cache=make_prompt_cache(model)))
        except RuntimeError as exc:
            print(f"new length {length}: {exc}", flush=True)
            return
        costs.append((time.perf_counter() - started) * 1000)
    costs.sort()
    print(
        f"{count} new prompt lengths: median {costs[count // 2]:.1f} ms, max {costs[-1]:.1f} ms", flush=True
    )


LONG_PROMPTS = ((64, 40), (64, 1024), (8, 4096), (1, 2048), (1, 8192), (1, 16384))


def long_prompts(model: Any, vocab: int) -> None:
    """Prefills from short bursts to long prompts, each shape twice (the first pays for what
    MLX builds per shape), through mlx-lm's batch with mlxd's prefill step of 256 tokens:
    milliseconds until every row has its first token, and the peak memory MLX held. Run
    once with ``MLX_CUDA_USE_CUDNN_SDPA=0`` and once without, to weigh cuDNN's fused
    attention (a plan built per shape) against MLX's unfused one (scores held whole)."""
    import random

    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator

    generator = BatchGenerator(model, prefill_batch_size=64, completion_batch_size=64, prefill_step_size=256)
    rng = random.Random(0)
    print("rows x tokens | first ms | peak GB | second ms | peak GB", flush=True)
    for rows, length in LONG_PROMPTS:
        cells = []
        for _ in range(2):
            prompts = [[rng.randrange(vocab) for _ in range(length)] for _ in range(rows)]
            mx.synchronize()
            mx.reset_peak_memory()
            started = time.perf_counter()
            generator.insert(prompts, max_tokens=[1] * rows)
            finished = 0
            for _ in range(10_000):
                finished += sum(r.finish_reason is not None for r in generator.next()[1])
                if finished == rows:
                    break
            mx.synchronize()
            cells.append(f"{(time.perf_counter() - started) * 1000:.1f} | {mx.get_peak_memory() / 1e9:.2f}")
        print(f"{rows} x {length} | " + " | ".join(cells), flush=True)


def _pace_ms(loops: int = 200_000) -> float:
    """Milliseconds for a fixed piece of pure Python: the pace of the core it runs on."""
    started = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i & 7
    return (time.perf_counter() - started) * 1000


def _quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    pick = [ordered[int(q * (len(ordered) - 1))] for q in (0.0, 0.1, 0.5, 0.9, 1.0)]
    return "min {:.2f} p10 {:.2f} p50 {:.2f} p90 {:.2f} max {:.2f}".format(*pick)


def _cpu() -> int:
    """The core the calling thread is on now (Linux; -1 elsewhere)."""
    try:
        fields = Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1
    return int(fields[36])  # field 39 of stat(5), counted after the command name


def cpu_pace(seconds: float = 8.0) -> None:
    """The same pure-Python work on every core, then every 50 ms on one core."""
    import os

    allowed = sorted(os.sched_getaffinity(0))
    per_core = []
    for core in allowed:
        os.sched_setaffinity(0, {core})
        per_core.append(f"{core}:{min(_pace_ms() for _ in range(3)):.1f}")
    os.sched_setaffinity(0, set(allowed))
    print("pure-Python pace per core, ms (lower is faster): " + " ".join(per_core), flush=True)
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        samples.append(_pace_ms())
        time.sleep(0.05)
    print(f"the same work every 50 ms for {seconds:.0f} s, unpinned: {_quantiles(samples)} ms", flush=True)


def _solo_steps(
    model: Any, tokenizer: Any, prompt: list[int], tokens: int, sampler: Any, stop_tokens: frozenset[int]
) -> list[float]:
    """Seconds per token of mlxd's solo decoder with its per-token output work (detokenizing,
    the output parser), until a stop token or ``tokens`` tokens; the first includes the
    prefill."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    from mlxd.output.parser import ChoiceParser, OutputSpec
    from mlxd.runtime.mlx.sequence import Sequence
    from mlxd.runtime.mlx.solo import SoloDecoder
    from mlxd.runtime.token_pieces import TokenPieces

    decoder = SoloDecoder(
        model,
        list(prompt),
        make_prompt_cache(model),
        [],
        sampler=sampler,
        processors=[],
        max_tokens=tokens,
        stop_tokens=stop_tokens,
        prefill_step_size=256,
        stream=mx.new_stream(mx.default_device()),
    )
    seq = Sequence(
        1,
        -1,
        None,
        tokenizer.detokenizer,
        ChoiceParser(OutputSpec()),
        stop_tokens,
        None,
        TokenPieces(tokenizer),
    )  # type: ignore[arg-type]
    steps: list[float] = []
    last = time.perf_counter()
    while True:
        response = decoder.step()
        if response is None:
            continue
        event = SimpleNamespace(
            token=response.token, logprobs=response.logprobs, finish_reason=response.finish_reason
        )
        seq.output(event, time.monotonic())
        now = time.perf_counter()
        steps.append(now - last)
        last = now
        if response.finish_reason is not None:
            return steps


def _raw_steps(model: Any, prompt: list[int], tokens: int) -> list[float]:
    """Seconds per token of mlx-lm's ``generate_step`` (greedy)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    steps: list[float] = []
    last = time.perf_counter()
    for _ in zip(range(tokens), generate_step(mx.array(prompt), model, max_tokens=tokens), strict=False):
        now = time.perf_counter()
        steps.append(now - last)
        last = now
    return steps


def _greedy(logprobs: Any) -> Any:
    import mlx.core as mx

    return mx.argmax(logprobs, axis=-1)


def decode_stalls(model: Any, tokenizer: Any, prompt: list[int], tokens: int = 300) -> None:
    """One lone greedy stream decoded in-process by mlx-lm's ``generate_step`` and by mlxd's
    solo decoder with its output work, each twice from the same prompt: each pass's median
    step and its longest steps, with the token each produced (counting from 1, the token
    the prefill gives) and the KV length then. A stall in the first pass only is something
    built for a new shape; in both passes of both engines, the accelerator's own; in mlxd's
    alone, mlxd's. Garbage collections in this process are counted beside."""
    import statistics

    from bench.gc_pauses import GcPauses

    for attempt in (1, 2):
        for name, run in (
            ("generate_step", lambda: _raw_steps(model, prompt, tokens)),
            ("mlxd solo", lambda: _solo_steps(model, tokenizer, prompt, tokens, _greedy, frozenset())),
        ):
            with GcPauses() as pauses:
                steps = run()
            median = statistics.median(steps[1:])
            longest = sorted(range(1, len(steps)), key=steps.__getitem__, reverse=True)[:5]
            print(
                f"lone stream, {name}, pass {attempt}: step p50 {median * 1e3:.2f} ms; longest: "
                + ", ".join(
                    f"{steps[i] * 1e3:.1f} ms @ token {i + 1} (KV {len(prompt) + i})" for i in sorted(longest)
                )
                + f"; garbage collector here: {pauses.summary()}",
                flush=True,
            )


def decode_rounds(model: Any, vocab: int, rounds: int = 12, rows: int = 64) -> None:
    """Identical rounds of ``rows`` sequences decoding ``TOKENS`` tokens, pipelined as mlx-lm
    does; per round the p50 of each step's parts: building the graph in Python, submitting it
    (``async_eval``) and waiting for the previous step's tokens (the accelerator's share)."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    inverse = 1.0 / TEMPERATURE
    prompt = mx.array([[(7 * i + j) % vocab for j in range(28)] for i in range(rows)])
    print(f"round | cores | build / submit / wait / step p50 ms, {rows} rows x {TOKENS} tokens", flush=True)
    for index in range(rounds):
        cache = make_prompt_cache(model)
        tokens = mx.random.categorical(model(prompt, cache=cache)[:, -1, :] * inverse)
        mx.eval(tokens)
        parts: list[tuple[float, float, float]] = []
        cores = {_cpu()}
        for _ in range(TOKENS):
            started = time.perf_counter()
            logits = model(tokens[:, None], cache=cache)
            following = mx.random.categorical(logits[:, -1, :] * inverse)
            built = time.perf_counter()
            mx.async_eval(following)
            submitted = time.perf_counter()
            tokens.tolist()
            parts.append((built - started, submitted - built, time.perf_counter() - submitted))
            tokens = following
        cores.add(_cpu())
        mx.eval(tokens)
        medians = [sorted(p[i] for p in parts)[len(parts) // 2] * 1000 for i in range(3)]
        steps = sorted(sum(p) for p in parts)
        print(
            f"{index} | {','.join(map(str, sorted(cores)))} | "
            + " / ".join(f"{m:.2f}" for m in medians)
            + f" / {steps[len(steps) // 2] * 1000:.2f}",
            flush=True,
        )


def main() -> None:
    """Load the model, then print the probes (``--lengths``: only ``new_lengths``; ``--rounds``:
    only ``cpu_pace`` and ``decode_rounds``; ``--first-round``: ``first_round`` and
    ``decode_stalls``)."""
    from mlx_lm import load

    if "--first-round" in sys.argv:  # where the daemon keeps the kernels it compiles
        from mlxd.config.paths import cache_dir
        from mlxd.runtime.mlx.memory import keep_compiled_kernels

        print(f"compiled kernels kept in {keep_compiled_kernels(cache_dir())}")
    model, tokenizer = load(sys.argv[1])
    vocab = model.args.vocab_size
    if "--lengths" in sys.argv:
        new_lengths(model, vocab)
        return
    if "--first-round" in sys.argv:
        first_round(model, vocab)
        decode_stalls(model, tokenizer, [(5 * j + 3) % vocab for j in range(7)])
        return
    if "--rows-change" in sys.argv:
        rows_change(model, vocab, warm_changes="--without-changes" not in sys.argv)
        return
    if "--long-prompts" in sys.argv:
        long_prompts(model, vocab)
        return
    if "--rounds" in sys.argv:
        cpu_pace()
        decode_rounds(model, vocab)
        return
    admissions(model, vocab)
    shapes(model, vocab)
    single(model, tokenizer)
    print(f"probed {Path(sys.argv[1]).name}")


if __name__ == "__main__":
    main()
