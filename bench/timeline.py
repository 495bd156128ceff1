"""When each request reached each stage inside mlxd, and what every decode step cost.

``bench.profiled`` installs ``Timeline`` in the daemon it runs: a few of mlxd's and mlx-lm's
methods are wrapped so that each call leaves ``(what, start, seconds, size)`` behind —
admission (template and tokenization), the worker taking a request, every prefill (a lone
sequence's chunks too), every decode step and its batch size, the batch's KV copies
(extend, filter), each embedding batch and its budget, the worker's whole pass and each
delivery to the event loop. ``python -m bench.timeline FILE [LEAST]`` reads what it wrote
and prints, per burst of at least LEAST (8) requests, how they spread over those stages:
where the time between a client's request and its first token goes, and what a decode
step costs beyond the model's own."""

from __future__ import annotations

import functools
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

Record = tuple[str, float, float, int]

#: Bursts of fewer requests are left out of the summary (one client, warm-up).
MIN_REQUESTS = 8


class Timeline:
    """Wraps methods so that each call appends a record; ``write`` saves them as JSON."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def install(self) -> None:
        """Wrap the stages (imports mlxd's runtime and mlx-lm)."""
        import importlib

        from mlxd.runtime import admission, engine_core
        from mlxd.runtime.mlx import commands, embed, prompt_cache, runner, solo, worker

        generate = importlib.import_module("mlx_lm.generate")  # the package's name is a function

        self._wrap_async(engine_core.EngineCore, "admit", "request")
        self._wrap_async(admission.Admission, "admit", "tokenize")
        self._wrap(admission, "encode_prompt", "template", lambda *_: 0)
        self._wrap(runner.ModelRunner, "insert", "insert", lambda _self, command, _out: len(command.choices))
        self._wrap(runner.ModelRunner, "step", "pass", lambda self, *_: len(self._by_seq))
        self._wrap(
            generate.PromptProcessingBatch,
            "prompt",
            "prefill",
            lambda self, tokens: sum(len(t) for t in tokens) * 1000 + len(tokens),
        )
        self._wrap(generate.GenerationBatch, "next", "decode", lambda self: len(self.uids))
        self._wrap(generate.GenerationBatch, "extend", "extend", lambda self, batch: len(batch.uids))
        self._wrap(generate.GenerationBatch, "filter", "filter", lambda self, keep: len(keep))
        self._wrap(
            generate.GenerationBatch, "__init__", "first-step", lambda self, model, uids, *_: len(uids)
        )
        self._wrap(
            prompt_cache.PromptCache, "_store_all", "cache-store", lambda _self, finished: len(finished)
        )
        self._wrap(solo.SoloDecoder, "_prefill_chunk", "solo-prefill", lambda self: len(self._unfed))
        self._wrap(embed.Embedder, "step", "embed", lambda _self, budget: budget)
        delivered = self._wrapped_function(commands.deliver, "deliver", lambda events: len(events))
        setattr(worker, "deliver", delivered)  # the worker imported it by name  # noqa: B010

    def _wrap(self, owner: Any, name: str, what: str, size: Callable[..., int]) -> None:
        setattr(owner, name, self._wrapped_function(getattr(owner, name), what, size))

    def _wrapped_function(self, fn: Callable[..., Any], what: str, size: Callable[..., int]) -> Any:
        records = self.records

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            amount = _size(size, args, kwargs)  # before the call: what it was given (rows, tokens)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                records.append((what, started, time.perf_counter() - started, amount))

        return wrapper

    def _wrap_async(self, owner: Any, name: str, what: str) -> None:
        fn = getattr(owner, name)
        records = self.records

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                records.append((what, started, time.perf_counter() - started, 1))

        setattr(owner, name, wrapper)

    def write(self, path: Path) -> None:
        """Save the records, oldest first."""
        path.write_text(json.dumps(sorted(self.records, key=lambda r: r[1])), encoding="utf-8")


def _size(size: Callable[..., int], args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    try:
        return int(size(*args, **kwargs))
    except Exception:  # a record without a size beats a daemon that fails
        return -1


def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return f"p50 {at(0.5):.1f} p90 {at(0.9):.1f} max {ordered[-1] * 1000:.1f} ms (n={len(values)})"


def bursts(records: list[Record], gap: float = 0.1) -> list[list[Record]]:
    """Records grouped by burst: requests that came within ``gap`` seconds of one another,
    with everything that happened until the next burst's first request."""
    starts = [r[1] for r in records if r[0] == "request"]
    firsts = [t for i, t in enumerate(starts) if i == 0 or t - starts[i - 1] > gap]
    groups: list[list[Record]] = [[] for _ in firsts]
    index = -1
    for record in records:
        while index + 1 < len(firsts) and record[1] >= firsts[index + 1]:
            index += 1
        if index >= 0:
            groups[index].append(record)
    return groups


def summarize(burst: list[Record]) -> list[str]:
    """What one burst's requests and steps cost, as lines."""
    by: dict[str, list[Record]] = defaultdict(list)
    for record in burst:
        by[record[0]].append(record)
    origin = by["request"][0][1]
    inserts = [r[1] - origin for r in by["insert"]]
    prefills = [r for r in by["prefill"] if r[3] > 0]
    decodes = by["decode"]
    stores = [r for r in by["cache-store"] if r[3] > 0]  # the worker's every pass asks; most have none
    full = max((r[3] for r in decodes), default=0)
    arrived = by["request"][-1][1] - origin
    lines = [
        f"{len(by['request'])} requests arrived over {arrived * 1000:.0f} ms; tokenized by {max((r[1] + r[2] - origin for r in by['tokenize']), default=0) * 1000:.0f} ms "
        f"(each {_quantiles([r[2] for r in by['tokenize']])}); "
        f"template and encoding {_quantiles([r[2] for r in by['template']])}; "
        f"taken by the worker at {_quantiles(inserts)} after the first",
        f"prefills: {len(prefills)}, rows {[r[3] % 1000 for r in prefills]}, "
        f"tokens {[r[3] // 1000 for r in prefills]}, {_quantiles([r[2] for r in prefills])}",
        f"first steps of new rows: {len(by['first-step'])}, {_quantiles([r[2] for r in by['first-step']])}; "
        f"extends {len(by['extend'])} ({sum(r[2] for r in by['extend']) * 1000:.1f} ms), "
        f"filters {len(by['filter'])} ({sum(r[2] for r in by['filter']) * 1000:.1f} ms), "
        f"cache stores of {sum(r[3] for r in stores)} rows in {len(stores)} evaluations "
        f"({sum(r[2] for r in stores) * 1000:.1f} ms)",
        f"decode steps: {len(decodes)}; at B={full}: {_quantiles([r[2] for r in decodes if r[3] == full])}; "
        f"all: {_quantiles([r[2] for r in decodes])}",
        f"worker passes: {_quantiles([r[2] for r in by['pass']])}; deliveries {len(by['deliver'])}, "
        f"{_quantiles([r[2] for r in by['deliver']])}",
    ]
    if by["embed"]:
        budgets = sorted(r[3] for r in by["embed"])
        lines.append(
            f"embedding batches: {len(budgets)}, budgets p50 {budgets[len(budgets) // 2]} max {budgets[-1]} "
            f"tokens, {_quantiles([r[2] for r in by['embed']])}"
        )
    if decodes:
        span = decodes[-1][1] + decodes[-1][2] - decodes[0][1]
        busy = sum(r[2] for r in decodes)
        lines.append(f"decode span {span * 1000:.0f} ms, of it in decode steps {busy / span:.0%}")
    return lines


def main() -> None:
    """Print each burst's summary from a timeline file."""
    records: list[Record] = [tuple(r) for r in json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))]
    least = int(sys.argv[2]) if len(sys.argv) > 2 else MIN_REQUESTS
    for index, burst in enumerate(bursts(records)):
        if sum(1 for r in burst if r[0] == "request") < least:
            continue
        print(f"burst {index}:")
        for line in summarize(burst):
            print("  " + line)


if __name__ == "__main__":
    main()
