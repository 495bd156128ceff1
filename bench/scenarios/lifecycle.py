"""Scenario 4: daemon start to first ``/health`` 200, idle RSS, RSS growth over many requests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bench import goals
from bench.clients import RequestResult, chat_body, closed_loop, new_client
from bench.prompts import request_messages
from bench.results import Headline, ScenarioResult, Table, fmt, fmt_ms
from bench.scenarios.base import Context, Scenario, checks
from bench.servers import ServerProcess, start_mlx_lm, start_mlxd
from bench.stats import median
from bench.targets import MLXD, SEED

METHOD = """\
Start: a fresh server process (new work directory) is launched and `GET /health` polled every
5 ms until it answers 200; median of {reps} start(s). mlxd loads models on first use, so its
number is the daemon alone; `mlx_lm.server --model` loads the ({model}) model before it listens,
so its number includes that load. Idle RSS = VmRSS of the server process 0.5 s after the first
200. Leak check on another fresh process per row: {warmup} warm-up requests (the model loads),
then the row's requests from 16 clients, `max_tokens = 1`, alternately streaming and not; RSS
is read after the warm-up and at five checkpoints; growth = (final − after warm-up) / after
warm-up. The prompts cycle through a pool of {pool}, except in the "every prompt new" row, which
shows what a stream of distinct prompts costs in memory. mlxd's prompt cache keeps filling long
after the warm-up (under 16 clients it held 5 of the 64 prompts after 5,000 requests, 32 after
20,000, each ~135 KB), so its rows also show the bytes that cache held after the warm-up and at
the end (`/mlxd/status`): memory it is meant to keep, within its budget. The "prompt cache off"
row (`prompt_cache_bytes = 0`, the same load) is the leak check proper: without that cache,
whatever RSS gains is memory nothing means to keep."""

CHECKPOINTS = 5


async def _idle_rss(server: ServerProcess) -> int:
    await asyncio.sleep(0.5)
    return server.rss_kb()


async def _starts(ctx: Context, name: str, reps: int) -> tuple[list[float], list[int]]:
    starts: list[float] = []
    rss: list[int] = []
    for rep in range(reps):
        workdir = ctx.workdir / f"start-{name}-{rep}"
        server = start_mlxd(ctx.model_dir, workdir) if name == MLXD else start_mlx_lm(ctx.model_dir, workdir)
        try:
            starts.append(await asyncio.to_thread(server.wait_healthy))
            rss.append(await _idle_rss(server))
        finally:
            server.stop()
    return starts, rss


async def _requests(server: ServerProcess, count: int, offset: int, pool: int | None) -> list[RequestResult]:
    """``count`` one-token requests; prompts numbered from ``offset``, modulo ``pool`` if given."""

    def body(i: int) -> dict[str, Any]:
        number = (offset + i) % pool if pool else offset + i
        return chat_body(request_messages(number), 1, stream=i % 2 == 0)

    async with new_client(server.url, 16) as client:
        load = await closed_loop(client, body, count, 16)
    return load.results


@dataclass
class _Leak:
    """RSS after the warm-up and at each checkpoint, and every measured request."""

    warm_kb: int
    series_kb: list[int] = field(default_factory=list)
    #: mlxd's prompt-cache bytes after the warm-up and at the end (``None``: not mlxd).
    prompt_cache: tuple[int, int] | None = None
    results: list[RequestResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def growth(self) -> float:
        return (self.series_kb[-1] - self.warm_kb) / self.warm_kb * 100

    def row(self, name: str) -> list[str]:
        errors = sum(1 for r in self.results if r.error is not None)
        return [
            name,
            f"{len(self.results):,}",
            fmt(self.warm_kb / 1024, 1, " MB"),
            " → ".join(fmt(kb / 1024, 1) for kb in self.series_kb) + " MB",
            f"{self.growth:+.1f}%",
            "-"
            if self.prompt_cache is None
            else " → ".join(fmt(b / 2**20, 1) for b in self.prompt_cache) + " MB",
            fmt(len(self.results) / self.seconds, 1),
            str(errors),
        ]


async def _prompt_cache_bytes(server: ServerProcess) -> int:
    """What mlxd's prompt cache holds now (``/mlxd/status``)."""
    async with new_client(server.url, 1) as client:
        reply = await client.get("/mlxd/status")
    return int(reply.json()["memory"]["prompt_cache_bytes"])


async def _leak(ctx: Context, name: str, count: int, pool: int | None, cache: bool = True) -> _Leak:
    """Warm a fresh server up, then send ``count`` requests, reading RSS at checkpoints
    (mlxd without its prompt cache unless ``cache``)."""
    workdir = ctx.workdir / f"leak-{name}-{pool}-{cache}"
    if name == MLXD:
        server = start_mlxd(ctx.model_dir, workdir, **({} if cache else {"prompt_cache_bytes": 0}))
    else:
        server = start_mlx_lm(ctx.model_dir, workdir)
    try:
        await asyncio.to_thread(server.wait_healthy)
        await _requests(server, ctx.plan.leak_warmup, 0, pool)
        leak = _Leak(server.rss_kb())
        cached = await _prompt_cache_bytes(server) if name == MLXD else None
        step = max(1, count // CHECKPOINTS)
        started = time.perf_counter()
        while len(leak.results) < count:
            ctx.say(f"leak check {name}: {len(leak.results)}/{count} requests")
            chunk = min(step, count - len(leak.results))
            offset = ctx.plan.leak_warmup + len(leak.results)
            leak.results += await _requests(server, chunk, offset, pool)
            leak.series_kb.append(server.rss_kb())
        leak.seconds = time.perf_counter() - started
        if cached is not None:
            leak.prompt_cache = (cached, await _prompt_cache_bytes(server))
        return leak
    finally:
        server.stop()


async def run(ctx: Context) -> ScenarioResult:
    """Starts of both servers, then a leak check of each."""
    plan = ctx.plan
    start_table = Table("Start and idle memory", ["target", "start → /health 200", "idle RSS", "starts"])
    starts: dict[str, float] = {}
    idle_kb: dict[str, float] = {}
    for name in (MLXD, SEED):
        ctx.say(f"start time: {name}")
        times, rss = await _starts(ctx, name, plan.start_reps)
        starts[name], idle_kb[name] = median(times), median(rss)
        start_table.rows.append(
            [name, fmt_ms(starts[name]), fmt(idle_kb[name] / 1024, 1, " MB"), str(len(times))]
        )
    leak_table = Table(
        "RSS over many requests",
        [
            "target",
            "requests",
            "RSS after warm-up",
            "RSS at checkpoints",
            "growth",
            "prompt cache held",
            "req/s",
            "errors",
        ],
    )
    notes: list[str] = []
    no_cache = f"{MLXD}, prompt cache off"
    rows = (
        (MLXD, plan.leak_requests, plan.leak_pool, MLXD),
        (MLXD, plan.leak_requests, plan.leak_pool, no_cache),
        (SEED, plan.leak_requests_seed, plan.leak_pool, SEED),
        (MLXD, plan.leak_unique, None, f"{MLXD}, every prompt new"),
    )
    headlines: list[Headline] = [
        Headline("mlxd start → /health 200", starts[MLXD], goals.START_SECONDS, unit="s"),
        Headline("mlxd idle RSS", idle_kb[MLXD] / 1024, goals.IDLE_RSS_MB, unit="MB"),
    ]
    for name, count, pool, label in rows:
        leak = await _leak(ctx, name, count, pool, cache=label != no_cache)
        leak_table.rows.append(leak.row(label))
        notes += checks(f"{label} leak check", leak.results, 1)
        goal = goals.RSS_GROWTH_PERCENT if label in (MLXD, no_cache) else None
        headlines.append(
            Headline(f"RSS growth over {count:,} requests: {label}", leak.growth, goal, unit="%")
        )
    method = METHOD.format(
        reps=plan.start_reps, warmup=plan.leak_warmup, pool=plan.leak_pool, model=ctx.model.name
    )
    return ScenarioResult(
        "lifecycle", "4. Start, idle memory and leaks", method, [start_table, leak_table], headlines, notes
    )


SCENARIO = Scenario("lifecycle", "start time, idle RSS, RSS after many requests", run, needs_targets=False)
