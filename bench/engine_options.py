"""``python -m bench --engine-options``: the engine options from mlx_lm.server, measured through mlxd.

Three measurements on the small model, each through real daemons (``python -m mlxd serve``)
and HTTP, written as one section of ``RESULTS.md`` (the rest of the file is left as it is):

1. speculative decoding: single-stream decode tokens/s of the model alone, with itself as
   its draft (every proposal accepted: the upper bound of acceptance), and with a smaller
   draft (its first layers: a draft of the same family);
2. KV memory at a 4k context: the bytes of a 4,000-token sequence's cache, full precision
   against ``kv_bits = 4`` (``/mlxd/status``'s prompt-cache bytes hold exactly that cache);
3. the first turn after a restart: TTFT of a chat with a 2,000-token system prompt when the
   previous daemon left its prefix on disk, against the same daemon with the disk cache off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import goals
from bench.clients import RequestResult, chat_body, new_client, request
from bench.machine import RunInfo
from bench.models import SMALL
from bench.prompts import Message, filler_text
from bench.results import Headline, Table, fmt, fmt_ratio
from bench.servers import ServerProcess, mlxd_config, model_table, start_mlxd_with
from bench.stats import median

START = "<!-- engine-options:start -->"
END = "<!-- engine-options:end -->"
#: The first turn after a restart with the disk cache, over the same without it.
RESTART_TTFT_VS_NO_DISK = goals.Goal(0.3, lower_is_better=True)

_DRAFT = """\
import pathlib, sys
from mlxd.runtime.demo_model import build_draft_model
build_draft_model(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), num_layers=int(sys.argv[3]))
"""


@dataclass(frozen=True)
class Plan:
    """How much to measure (the small model decodes a few tokens per second on a CPU)."""

    tokens: int = 64
    repeats: int = 3
    num_draft_tokens: int = 3
    draft_layers: int = 2
    kv_context: int = 4000
    system_tokens: int = 2000

    @classmethod
    def quick(cls) -> Plan:
        return cls(tokens=16, repeats=1, kv_context=1000, system_tokens=600)


@dataclass
class Section:
    """What the run found, as tables and headlines."""

    tables: list[Table] = field(default_factory=list)
    headlines: list[Headline] = field(default_factory=list)


def _model_dirs(workdir: Path, plan: Plan) -> tuple[Path, Path]:
    import subprocess
    import sys

    model = SMALL.build(workdir / "small")
    draft = workdir / f"small-first-{plan.draft_layers}"
    subprocess.run([sys.executable, "-c", _DRAFT, str(model), str(draft), str(plan.draft_layers)], check=True)
    return model, draft


def _chat(model: str, messages: list[Message], tokens: int) -> dict[str, Any]:
    return {**chat_body(messages, tokens, stream=True), "model": model}


async def _ask(server: ServerProcess, body: dict[str, Any]) -> RequestResult:
    async with new_client(server.url, 1) as client:
        result = await request(client, body, time.perf_counter())
    if result.error is not None:
        raise RuntimeError(f"{body.get('model')}: {result.error}\n{server.log_tail()}")
    return result


def _decode_rate(result: RequestResult) -> float:
    """Tokens per second after the first one (the prefill and the first token left out)."""
    if result.tokens < 2 or len(result.times) < 2:
        return float("nan")
    return (result.tokens - 1) / (result.times[-1] - result.times[0])


async def _speculative(
    model: Path, draft: Path, workdir: Path, plan: Plan, say: Callable[[str], None]
) -> Section:
    k = plan.num_draft_tokens
    tables = (
        model_table("plain", model, default=True)
        + model_table("self-draft", model)
        + f'draft_model = "plain"\nnum_draft_tokens = {k}\n'
        + model_table("small-draft", model)
        + f'draft_model = "{draft}"\nnum_draft_tokens = {k}\n'
    )
    server = start_mlxd_with(mlxd_config(tables, prompt_cache_disk_bytes=0, max_loaded_models=4), workdir)
    rates: dict[str, list[float]] = {"plain": [], "self-draft": [], "small-draft": []}
    texts: dict[str, set[str]] = {name: set() for name in rates}
    try:
        server.wait_healthy()
        for name in rates:  # load every unit and warm its paths up
            await _ask(server, _chat(name, [{"role": "user", "content": "warm up"}], 4))
        for i in range(plan.repeats):
            messages: list[Message] = [{"role": "user", "content": f"Story {i}: {filler_text(40, i)}"}]
            for name in rates:
                say(f"speculative decoding: {name}, request {i + 1} of {plan.repeats}")
                result = await _ask(server, _chat(name, messages, plan.tokens))
                rates[name].append(_decode_rate(result))
                texts[name].add(f"{i}:{result.text}")
    finally:
        server.stop()
    plain = median(rates["plain"])
    table = Table(
        f"Single-stream decode, {plan.tokens} greedy tokens, median of {plan.repeats}",
        ["alias", "draft", "tokens/s", "/ plain", "same text as plain"],
    )
    for name, what in (
        ("plain", "none"),
        ("self-draft", f"the model itself, {k} tokens a step"),
        ("small-draft", f"its first {plan.draft_layers} layers, {k} tokens a step"),
    ):
        rate = median(rates[name])
        table.rows.append(
            [name, what, fmt(rate, 1), fmt_ratio(rate / plain), str(texts[name] == texts["plain"])]
        )
    return Section(
        [table],
        [
            Headline(
                "speculative decoding, model as its own draft: tokens/s / plain",
                median(rates["self-draft"]) / plain,
            ),
            Headline(
                "speculative decoding, smaller draft: tokens/s / plain", median(rates["small-draft"]) / plain
            ),
        ],
    )


def _status(server: ServerProcess) -> dict[str, Any]:
    return dict(httpx.get(f"{server.url}/mlxd/status", timeout=10).json())


async def _kv_memory(model: Path, workdir: Path, plan: Plan, say: Callable[[str], None]) -> Section:
    tables = (
        model_table("full", model, default=True)
        + model_table("kv4", model)
        + "kv_bits = 4\nquantized_kv_start = 0\n"
    )
    server = start_mlxd_with(mlxd_config(tables, prompt_cache_disk_bytes=0, max_loaded_models=4), workdir)
    found: dict[str, tuple[int, int]] = {}
    try:
        server.wait_healthy()
        for i, name in enumerate(("full", "kv4")):
            before = int(_status(server)["memory"]["prompt_cache_bytes"])
            say(f"KV memory: a {plan.kv_context}-token prompt on {name} (a long prefill on this model)")
            # Token ids, so the prompt has exactly kv_context tokens (ids clear of the special ones).
            prompt = [10 + (t * 7919 + i) % 700 for t in range(plan.kv_context)]
            body = {"model": name, "prompt": prompt, "max_tokens": 4, "temperature": 0.0}
            async with new_client(server.url, 1) as client:
                response = await client.post("/v1/completions", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"{name}: {response.text}\n{server.log_tail()}")
            usage = response.json()["usage"]
            deadline = time.monotonic() + 30
            while (after := int(_status(server)["memory"]["prompt_cache_bytes"])) == before:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: the finished sequence never reached the prompt cache")
                await asyncio.sleep(0.5)
            found[name] = (usage["prompt_tokens"] + usage["completion_tokens"], after - before)
    finally:
        server.stop()
    table = Table(
        f"KV cache of one sequence of about {plan.kv_context:,} tokens (its prompt-cache entry)",
        ["alias", "tokens held", "KV bytes", "bytes per token", "/ full precision"],
    )
    full_bytes = found["full"][1]
    for name, (tokens, size) in found.items():
        table.rows.append(
            [name, fmt(tokens), f"{size / 2**20:,.1f} MiB", fmt(size / tokens), fmt_ratio(size / full_bytes)]
        )
    return Section(
        [table],
        [Headline("KV memory at a 4k context, kv_bits = 4 / full precision", found["kv4"][1] / full_bytes)],
    )


async def _restart_ttft(model: Path, workdir: Path, plan: Plan, say: Callable[[str], None]) -> Section:
    cache_dir = workdir / "prompt-cache"
    system = filler_text(plan.system_tokens * 2 // 3, 11)
    messages: list[Message] = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Turn one."},
    ]
    body = _chat("small", messages, 8)
    tables = model_table("small", model, default=True)

    def config(disk: bool) -> str:
        disk_keys: dict[str, int | str] = {
            "prompt_cache_dir": str(cache_dir),
            "prompt_cache_disk_min_tokens": 256,
        }
        return mlxd_config(tables, **(disk_keys if disk else {"prompt_cache_disk_bytes": 0}))

    async def first_turn(label: str, disk: bool, directory: str) -> RequestResult:
        server = start_mlxd_with(config(disk), workdir / directory)
        try:
            server.wait_healthy()
            await _ask(server, _chat("small", [{"role": "user", "content": "load the model"}], 2))
            say(f"turn 1 after a restart: {label}")
            return await _ask(server, body)
        finally:
            server.stop()

    cold = await first_turn("the first daemon writes the prefix to disk", True, "first")
    deadline = time.monotonic() + 60
    while not list(cache_dir.glob("*.safetensors")):
        if time.monotonic() > deadline:
            raise RuntimeError("no prompt-cache file was written")
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # the writer thread renames the file into place when it is complete
    warm = await first_turn("restarted, the disk cache on", True, "restarted")
    off = await first_turn("restarted, the disk cache off", False, "no-disk")
    table = Table(
        f"First turn after a restart: a {cold.prompt_tokens}-token prompt, {plan.system_tokens} of them a system prompt",
        ["daemon", "TTFT", "cached tokens", "/ disk cache off"],
    )
    for label, result in (
        ("first daemon (cold: writes the prefix to disk)", cold),
        ("restarted, disk cache on", warm),
        ("restarted, disk cache off", off),
    ):
        table.rows.append(
            [label, f"{result.ttft:.2f} s", fmt(result.cached_tokens), fmt_ratio(result.ttft / off.ttft)]
        )
    return Section(
        [table],
        [
            Headline(
                "turn-1 TTFT after a restart: disk cache / none",
                warm.ttft / off.ttft,
                RESTART_TTFT_VS_NO_DISK,
            )
        ],
    )


METHOD = """\
Each measurement starts its own daemons (`python -m mlxd serve`, the benchmark's settings:
temperature 0, `prefill_step_size = 256`) on the small model and talks to them over HTTP,
streaming with `stream_options.include_usage`; tokens come from `usage`. Speculative
decoding: one daemon with three aliases over the same weights (no draft; `draft_model` =
the alias itself; `draft_model` = a copy of the model cut to its first layers, built by
`demo_model.build_draft_model`), a single stream each in turn, decode rate = tokens after
the first / time from the first content chunk to the last. KV memory: one request of
4,000 prompt tokens (token ids, so the count is exact) to a full-precision alias and to a
`kv_bits = 4` alias (`quantized_kv_start = 0`); the finished sequence's cache is its prompt-cache entry, read as
the growth of `memory.prompt_cache_bytes` in `/mlxd/status`. Restart: a daemon answers a
chat whose system prompt is about 2,000 tokens and writes the prefix to its
`prompt_cache_dir`; a new daemon on the same directory answers the same chat (its model is
loaded first by a short unrelated request, so TTFT is the prompt's alone), then a daemon
with `prompt_cache_disk_bytes = 0` does."""


READING = """\
Reading the speculative rows: on a CPU with MLX's reference BLAS a forward pass costs in
proportion to the tokens it reads, so checking a draft's k proposals costs about k + 1
decode steps and speculation cannot pay here; the rows show its cost and that greedy output
is unchanged (last column). Where a forward pass over a few tokens costs about one step (a
GPU, Apple silicon), the model as its own draft is the break-even bound (every proposal is
accepted, each costs a full step) and a cheap draft that agrees often is the gain."""


def render(section: Section, plan: Plan, info: RunInfo) -> str:
    """The section of ``RESULTS.md``, between its markers."""
    lines = [START, "## Engine options from mlx_lm.server (small model)", ""]
    lines.append(
        f"Command: `{info.command}`; {info.started:%Y-%m-%d %H:%M} UTC, {info.seconds / 60:.1f} minutes."
    )
    lines += [
        "",
        METHOD.replace("\n", " "),
        "",
        "| measure | value | target | verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {h.label} | {h.shown} | {h.target} | {h.verdict} |" for h in section.headlines]
    for table in section.tables:
        lines += ["", f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |"]
        lines.append("|" + "|".join("---" for _ in table.columns) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join([*lines, "", READING.replace("\n", " "), "", END]) + "\n"


async def run(workdir: Path, plan: Plan, say: Callable[[str], None]) -> Section:
    """Build the models and take the three measurements."""
    say("building the small model and its draft")
    model, draft = await asyncio.to_thread(_model_dirs, workdir, plan)
    section = Section()
    for part in (
        _speculative(model, draft, workdir / "speculative", plan, say),
        _kv_memory(model, workdir / "kv", plan, say),
        _restart_ttft(model, workdir / "restart", plan, say),
    ):
        found = await part
        section.tables += found.tables
        section.headlines += found.headlines
    return section
