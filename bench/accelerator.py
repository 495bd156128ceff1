"""``python -m bench --gpu --model-dir DIR``: mlxd against the raw engine and the seed on a GPU.

Made for one call on an accelerator machine (MLX's CUDA build, or Metal on a Mac): for
each model directory it starts mlxd, ``mlx_lm.server`` and the raw engine on the same
model, and measures, all in that one run so that ratios compare like with like:

- one client: streaming tokens/s against ``stream_generate`` and the raw ``BatchGenerator``;
- rounds of B = 16 and 64 clients (each client sends one request, the round ends when all
  have finished): aggregate tokens/s of every round, their spread, TTFT;
- the raw engine's time to prefill the same 64 prompts in one batch, the floor for TTFT;
- mlxd's first round at 64 clients after a start (kernel compilation), and its memory
  (RSS, MLX active and buffer-cache bytes) after each of many rounds.

mlxd's and the raw engine's rounds alternate; mlx_lm.server's runs come last: at many clients
some of its requests fail, and the rounds that followed its own, whichever target's, ran
slower and unevenly (on an H100, ±18-38% against ±2-11% since).

Requests are streaming chat requests at temperature 0.7 (``--temperature``) for a fixed number
of tokens; the model should have a realistic vocabulary so that sampling its end token is rare
(token counts come from ``usage`` either way, and short answers are noted in the report).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import platform
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.client_pool import ClientPool
from bench.clients import LoadResult, RequestResult, new_client, request
from bench.machine import RunInfo
from bench.prompts import request_messages
from bench.report import write_section as write_marked_section
from bench.results import Headline, Table, fmt, fmt_ms, fmt_ratio
from bench.scenarios.base import checks, p50_p99, ttfts
from bench.servers import ServerProcess
from bench.stats import median, ratio
from bench.targets import MLXD, RAW, SEED, Targets, start_targets

GPU_START = "<!-- gpu:start -->"
GPU_END = "<!-- gpu:end -->"


@dataclass(frozen=True)
class GpuPlan:
    """Sizes of the accelerator run (``quick`` shrinks them for a smoke test)."""

    levels: tuple[int, ...] = (16, 64)
    tokens: int = 128
    rounds: int = 5
    memory_rounds: int = 20
    single_reps: int = 5
    prefill_reps: int = 3
    temperature: float = 0.7
    #: Each level's rounds reuse one client's connections (as SDK clients do), opened in an
    #: unmeasured round; otherwise every round opens its own and their setup is in its TTFT.
    keep_connections: bool = False
    #: With kept connections: the simulated users spread over this many client processes
    #: (``client_pool``), so that no one client process reads every stream.
    client_processes: int = 1

    @classmethod
    def quick(cls) -> GpuPlan:
        """A smoke run: small levels, few rounds, short answers."""
        return cls(levels=(2, 4), tokens=16, rounds=2, memory_rounds=3, single_reps=2, prefill_reps=1)


@dataclass
class Round:
    """One round of B concurrent requests."""

    load: LoadResult
    memory: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Aggregate tokens/s of the round."""
        return self.load.tokens / self.load.wall if self.load.wall > 0 else math.nan


@dataclass
class ModelReport:
    """Everything measured on one model."""

    name: str
    single: dict[str, list[float]] = field(default_factory=dict)
    rounds: dict[tuple[int, str], list[Round]] = field(default_factory=dict)
    prefill_s: list[float] = field(default_factory=list)
    first_round: Round | None = None
    notes: list[str] = field(default_factory=list)


def _body(index: int, plan: GpuPlan) -> dict[str, Any]:
    return {
        "messages": request_messages(index),
        "max_tokens": plan.tokens,
        "temperature": plan.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def _server_round(
    url: str,
    clients: int,
    numbers: Iterator[int],
    plan: GpuPlan,
    kept: list[httpx.AsyncClient] | ClientPool | None = None,
) -> LoadResult:
    """``clients`` requests sent at once; the round ends when the last one does. Without
    ``kept`` the round opens its own connections (their setup is in every TTFT); with it,
    request ``i`` goes through ``kept[i]``, a client of its own with one kept connection
    (in a process of its own share of the users, for a ``ClientPool``)."""
    if isinstance(kept, ClientPool):
        return await kept.round([_body(next(numbers), plan) for _ in range(clients)])
    if kept is None:
        async with new_client(url, clients) as own:
            return await _requests([own] * clients, numbers, plan)
    return await _requests(kept[:clients], numbers, plan)


async def _requests(senders: list[httpx.AsyncClient], numbers: Iterator[int], plan: GpuPlan) -> LoadResult:
    origin, cpu = time.perf_counter(), time.process_time()
    bodies = [_body(next(numbers), plan) for _ in senders]
    results = await asyncio.gather(
        *(request(c, body, origin) for c, body in zip(senders, bodies, strict=True))
    )
    return LoadResult(time.perf_counter() - origin, list(results), client_cpu=time.process_time() - cpu)


def _raw_round(targets: Targets, clients: int, numbers: Iterator[int], plan: GpuPlan) -> LoadResult:
    requests = [request_messages(next(numbers)) for _ in range(clients)]
    # The engine at its best: every prompt of the round prefilled in one batch.
    return targets.raw.batch(
        requests, plan.tokens, clients, temperature=plan.temperature, prefill_batch_size=clients
    )


async def _mlxd_memory(server: ServerProcess) -> dict[str, float]:
    """RSS and MLX memory of the daemon once its worker is idle again."""
    await asyncio.sleep(0.2)  # the worker refreshes its figures when it goes idle
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        status = (await client.get("/mlxd/status")).json()
    memory = status.get("memory", {})
    return {
        "rss_mb": server.rss_kb() / 1024,
        "active_mb": memory.get("mlx_active_bytes", math.nan) / 2**20,
        "cache_mb": memory.get("mlx_cache_bytes", math.nan) / 2**20,
    }


async def _load_model(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=600) as client:
        response = await client.post("/mlxd/models/bench/load")
        response.raise_for_status()


async def measure_model(
    name: str, model_dir: Path, workdir: Path, plan: GpuPlan, say: Any, profile: Path | None = None
) -> ModelReport:
    """Start the three targets on ``model_dir`` and run every measurement on them (mlxd under
    the sampling profiler when ``profile`` names a folder for its stacks).

    mlx_lm.server's runs come last: at many clients some of its requests fail, and the rounds
    after its own ran slower and unevenly (work it goes on doing for them, it seems)."""
    report = ModelReport(name)
    numbers = itertools.count(1_000_000)
    say(f"{name}: starting mlxd, mlx_lm.server and the raw engine")
    folded = profile / f"mlxd-{name}.folded" if profile is not None else None
    targets = start_targets(model_dir, workdir, profile=folded)
    try:
        # The first users after a start: load the model, then a full round at once.
        await _load_model(targets.mlxd)
        top = max(plan.levels)
        say(f"{name}: mlxd's first round of {top} clients after a start")
        report.first_round = Round(await _server_round(targets.mlxd.url, top, numbers, plan))
        say(f"{name}: warming up")
        for level in (1, *plan.levels):
            await _server_round(targets.mlxd.url, level, numbers, plan)
            _raw_round(targets, level, numbers, plan)
        await _single(report, targets, numbers, plan, say)
        for level in plan.levels:
            await _levels(report, targets, level, numbers, plan, say)
        say(f"{name}: raw engine prefill of {top} prompts in one batch")
        for _ in range(plan.prefill_reps):
            report.prefill_s.append(
                targets.raw.prefill([request_messages(next(numbers)) for _ in range(top)])
            )
        await _seed(report, targets, numbers, plan, say)
    finally:
        targets.close()
    return report


async def _single(
    report: ModelReport, targets: Targets, numbers: Iterator[int], plan: GpuPlan, say: Any
) -> None:
    say(f"{report.name}: one client, {plan.single_reps} repetitions")
    # mlx_lm.server's repetitions are added by ``_seed``, after everything else.
    rates: dict[str, list[float]] = {MLXD: [], SEED: [], "stream_generate": [], "raw BatchGenerator": []}
    for _ in range(plan.single_reps):
        load = await _server_round(targets.mlxd.url, 1, numbers, plan)
        rates[MLXD].append(_decode_rate(load.results[0]))
        raw = targets.raw.single(request_messages(next(numbers)), plan.tokens, temperature=plan.temperature)
        rates["stream_generate"].append(_decode_rate(raw))
        batch = _raw_round(targets, 1, numbers, plan)
        rates["raw BatchGenerator"].append(_decode_rate(batch.results[0]))
    report.single = rates


def _decode_rate(result: RequestResult) -> float:
    """Tokens/s after the first token (the prefill of a short prompt left out)."""
    span = result.times[-1] - result.times[0] if result.times else 0.0
    if result.error is not None or result.tokens < 2 or span <= 0:
        return math.nan
    return (result.tokens - 1) / span


@contextlib.asynccontextmanager
async def _kept_clients(
    url: str, level: int, plan: GpuPlan
) -> AsyncIterator[list[httpx.AsyncClient] | ClientPool | None]:
    """With kept connections, one client per simulated user, as each app holds its own SDK
    client (through one client's pool of 64 kept connections, httpx sent a round's requests
    one after another over ~0.5 s, its trace hooks showed: the client, not the server, set
    TTFT); spread over client processes when the plan says so. None: each round opens its own."""
    if not plan.keep_connections:
        yield None
    elif plan.client_processes > 1:
        pool = ClientPool(url, level, plan.client_processes)
        try:
            yield pool
        finally:
            pool.close()
    else:
        async with contextlib.AsyncExitStack() as stack:
            yield [await stack.enter_async_context(new_client(url, 1)) for _ in range(level)]


async def _levels(
    report: ModelReport, targets: Targets, level: int, numbers: Iterator[int], plan: GpuPlan, say: Any
) -> None:
    """mlxd's rounds at ``level``, each followed by one of the raw engine's."""
    top = level == max(plan.levels)
    mlxd_rounds = max(plan.rounds, plan.memory_rounds) if top else plan.rounds
    say(f"{report.name}: {level} clients, {plan.rounds} rounds each ({mlxd_rounds} for mlxd)")
    async with _kept_clients(targets.mlxd.url, level, plan) as kept:
        if kept is not None:  # the connections open in a round before the measured ones
            await _server_round(targets.mlxd.url, level, numbers, plan, kept)
        for index in range(mlxd_rounds):
            mine = Round(await _server_round(targets.mlxd.url, level, numbers, plan, kept))
            mine.memory = await _mlxd_memory(targets.mlxd)
            report.rounds.setdefault((level, MLXD), []).append(mine)
            if index < plan.rounds:
                raw = Round(_raw_round(targets, level, numbers, plan))
                report.rounds.setdefault((level, RAW), []).append(raw)


async def _seed(
    report: ModelReport, targets: Targets, numbers: Iterator[int], plan: GpuPlan, say: Any
) -> None:
    """mlx_lm.server's one client and rounds, after everything else on this model."""
    say(f"{report.name}: mlx_lm.server, one client and {plan.rounds} rounds per level")
    for level in (1, *plan.levels):
        await _server_round(targets.seed.url, level, numbers, plan)
    for _ in range(plan.single_reps):
        load = await _server_round(targets.seed.url, 1, numbers, plan)
        report.single[SEED].append(_decode_rate(load.results[0]))
    for level in plan.levels:
        async with _kept_clients(targets.seed.url, level, plan) as kept:
            if kept is not None:
                await _server_round(targets.seed.url, level, numbers, plan, kept)
            for _ in range(plan.rounds):
                seed = Round(await _server_round(targets.seed.url, level, numbers, plan, kept))
                report.rounds.setdefault((level, SEED), []).append(seed)


def _client_share(rounds: list[Round]) -> str:
    """The median share of a round's wall time the client process spent on the CPU: near
    100% means the client, not the server, set the pace ("-" for the in-process engine)."""
    shares = [
        r.load.client_cpu / r.load.wall
        for r in rounds
        if r.load.wall > 0 and not math.isnan(r.load.client_cpu)
    ]
    return f"{median(shares) * 100:.0f}%" if shares else "-"


def _spread(rounds: list[Round]) -> float:
    """The largest deviation of a round's tokens/s from their median, in percent."""
    rates = [r.rate for r in rounds if not math.isnan(r.rate)]
    mid = median(rates)
    return max(abs(r - mid) for r in rates) / mid * 100 if rates and mid > 0 else math.nan


def render(reports: list[ModelReport], plan: GpuPlan, info: str) -> str:
    """The GPU section of ``RESULTS.md``."""
    lines = [GPU_START, "## On a GPU", "", info, ""]
    connections = (
        "each level's rounds reusing one client's connections"
        if plan.keep_connections
        else "new connections every round"
    )
    if plan.keep_connections and plan.client_processes > 1:
        connections += f", the clients spread over {plan.client_processes} processes"
    lines.append(
        f"Streaming chat requests for {plan.tokens} tokens at temperature {plan.temperature}; "
        f"rounds of B clients each sending one request at once ({plan.rounds} rounds per target and "
        f"level, {plan.memory_rounds} for mlxd at the top level; {connections}); "
        "raw = mlx-lm's `BatchGenerator` "
        "in-process with every prompt of a round prefilled in one batch; single stream = tokens/s "
        "after the first token. mlxd's and the raw engine's rounds alternate; mlx_lm.server's "
        "come after both (the rounds after its own, whose requests partly fail, ran slower). "
        "Ratios come from this one run."
    )
    headlines: list[Headline] = []
    for report in reports:
        lines += ["", f"### {report.name}", ""]
        lines += _tables(report, plan, headlines)
        lines += report.notes
    summary = Table("Targets", ["measure", "model", "value", "target", "verdict"])
    summary.rows = [[h.label, h.model, h.shown, h.target, h.verdict] for h in headlines]
    lines += ["", _md(summary), "", GPU_END]
    return "\n".join(lines) + "\n"


def _tables(report: ModelReport, plan: GpuPlan, headlines: list[Headline]) -> list[str]:
    from bench.goals import Goal

    out: list[str] = []
    single = Table("One client (decode tok/s, median)", ["target", "tok/s", "mlxd / target"])
    mine = median(report.single.get(MLXD, []))
    for label, values in report.single.items():
        rate = median(values)
        single.rows.append([label, fmt(rate, 1), fmt_ratio(ratio(mine, rate))])
    out += [_md(single), ""]
    vs_stream = ratio(mine, median(report.single.get("stream_generate", [])))
    headlines.append(Headline("1 client: mlxd / stream_generate", vs_stream, Goal(0.95), model=report.name))
    levels = Table(
        "Rounds of concurrent clients",
        [
            "clients",
            "target",
            "tok/s median",
            "min",
            "max",
            "spread",
            "TTFT p50",
            "TTFT p99",
            "errors",
            "client CPU",
        ],
    )
    top = max(plan.levels)
    prefill = median(report.prefill_s)
    for level in plan.levels:
        rates: dict[str, float] = {}
        for target in (MLXD, RAW, SEED):
            rounds = report.rounds.get((level, target), [])
            results = [r for rnd in rounds for r in rnd.load.results]
            report.notes += checks(f"{report.name}, {target}, {level} clients", results, plan.tokens)
            values = [r.rate for r in rounds]
            rates[target] = median(values)
            p50, p99 = p50_p99(ttfts(results))
            levels.rows.append(
                [
                    str(level),
                    target,
                    fmt(rates[target]),
                    fmt(min(values, default=math.nan)),
                    fmt(max(values, default=math.nan)),
                    f"±{_spread(rounds):.0f}%",
                    fmt_ms(p50),
                    fmt_ms(p99),
                    str(sum(rnd.load.errors for rnd in rounds)),
                    _client_share(rounds),
                ]
            )
            if target == MLXD and level == top:
                label = f"{level} clients, TTFT p99: mlxd / raw prefill of {level} prompts (lower is better)"
                headlines.append(
                    Headline(label, ratio(p99, prefill), Goal(1.5, lower_is_better=True), model=report.name)
                )
        headlines.append(
            Headline(
                f"{level} clients, agg tok/s: mlxd / raw BatchGenerator",
                ratio(rates[MLXD], rates[RAW]),
                Goal(0.8),
                model=report.name,
            )
        )
        headlines.append(
            Headline(
                f"{level} clients, round spread: mlxd",
                _spread(report.rounds.get((level, MLXD), [])),
                Goal(15.0, lower_is_better=True),
                unit="%",
                model=report.name,
            )
        )
        headlines.append(
            Headline(
                f"{level} clients, agg tok/s: mlxd / mlx_lm.server",
                ratio(rates[MLXD], rates[SEED]),
                model=report.name,
            )
        )
    out += [_md(levels), ""]
    out.append(f"Raw engine prefill of {top} prompts in one batch: {fmt_ms(prefill)} (median).")
    if report.first_round is not None:
        first = report.first_round
        p50, p99 = p50_p99(ttfts(first.load.results))
        out.append(
            f"mlxd's first round of {top} clients after a start (model loaded, no warm-up): "
            f"{fmt(first.rate)} tok/s, TTFT p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}."
        )
    memory = Table(
        "mlxd memory after each round at the top level", ["round", "RSS MB", "MLX active MB", "MLX cache MB"]
    )
    for i, rnd in enumerate(report.rounds.get((top, MLXD), []), 1):
        m = rnd.memory
        cells = [fmt(m.get(key, math.nan)) for key in ("rss_mb", "active_mb", "cache_mb")]
        memory.rows.append([str(i), *cells])
    out += ["", _md(memory), ""]
    return out


def _md(table: Table) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Put the GPU section into ``path``, replacing an earlier one and keeping the rest."""
    write_marked_section(path, section, GPU_START, GPU_END)


def gpu_name() -> str:
    """The accelerator's name, as its driver tells it (``nvidia-smi``), else the platform's."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return ", ".join(line.strip() for line in out.stdout.splitlines() if line.strip())
    except (OSError, subprocess.SubprocessError):
        return f"{platform.system()} {platform.machine()}"


def describe(info: RunInfo) -> str:
    """Where and with what the run happened, as a few Markdown lines."""
    versions = ", ".join(f"{name} {version}" for name, version in info.versions.items())
    return (
        f"Command: `{info.command}`; {info.started:%Y-%m-%d %H:%M} UTC, {info.seconds / 60:.1f} minutes.  \n"
        f"Accelerator: {gpu_name()}; {versions}."
    )


async def run(
    model_dirs: list[Path], workdir: Path, plan: GpuPlan, say: Any, profile: Path | None = None
) -> list[ModelReport]:
    """Measure each model in turn."""
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    reports = []
    for model_dir in model_dirs:
        name = model_dir.name
        reports.append(await measure_model(name, model_dir, workdir / name, plan, say, profile))
    return reports
