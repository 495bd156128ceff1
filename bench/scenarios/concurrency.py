"""Scenario 2: N concurrent streaming clients (1, 4, 16, 64 on the tiny model); throughput and latency."""

from __future__ import annotations

from bench import goals
from bench.clients import LoadResult, closed_loop, new_client, numbered_bodies
from bench.plan import Plan
from bench.prompts import request_messages
from bench.results import Headline, ScenarioResult, Table, fmt, fmt_ms, fmt_ratio
from bench.scenarios.base import Context, Scenario, checks, gaps, p50_p99, tpot, ttfts
from bench.servers import cpu_seconds
from bench.stats import ratio
from bench.targets import MLXD, RAW, SEED

METHOD = """\
A closed loop: N clients each send a streaming greedy chat request for {tokens} tokens and
the next one as soon as theirs ends: N × {waves} requests per level (at least {least}); every
prompt is unique (~27 tokens). Aggregate tok/s = all `usage.completion_tokens` / wall time of
the level. TTFT = request sent → first content chunk. ITL = gaps between
content chunks (a chunk can carry several tokens when a server batches its writes, so also
see TPOT = (last chunk − first chunk) / (tokens − 1), the per-token pace, median over
requests). The raw engine runs the same closed loop on one `BatchGenerator` in-process
(mlxd's batch settings: up to 64 decoding, 8 prefilling, prefill step 256), one token per
step and sequence, so its ITL is its step time. CPU/token = the server process's CPU time during
the level / tokens generated; client CPU/token is the same for this harness's own process (it
shares the machine's cores with the server). seqs/step = tokens / decode steps, the mean number of sequences
each engine step advanced (mlxd reports its steps in `/mlxd/status`; mlx_lm.server does not)."""


def _total(level: int, plan: Plan) -> int:
    return max(level * plan.concurrency_waves, plan.concurrency_min_requests)


async def _server_level(url: str, level: int, total: int, tokens: int, offset: int) -> LoadResult:
    async with new_client(url, level) as client:
        return await closed_loop(client, numbered_bodies(offset, tokens, stream=True), total, level)


async def run(ctx: Context) -> ScenarioResult:
    """Every level, every target (mlxd, mlx_lm.server, raw engine in turn)."""
    targets, plan = ctx.running(), ctx.plan
    measured: dict[tuple[int, str], LoadResult] = {}
    offset = 100_000
    for level in plan.concurrency_levels:
        total = _total(level, plan)
        for name, server in ((MLXD, targets.mlxd), (SEED, targets.seed)):
            ctx.say(f"concurrency {level}: {name}, {total} requests")
            before, steps = cpu_seconds(server.pid), server.decode_steps()
            load = await _server_level(server.url, level, total, plan.concurrency_tokens, offset)
            load.cpu = cpu_seconds(server.pid) - before
            load.steps = server.decode_steps() - steps
            measured[(level, name)] = load
            offset += total
        ctx.say(f"concurrency {level}: raw engine")
        requests = [request_messages(offset + i) for i in range(total)]
        before = cpu_seconds(targets.raw.pid)
        load = targets.raw.batch(requests, plan.concurrency_tokens, level)
        load.cpu = cpu_seconds(targets.raw.pid) - before
        measured[(level, RAW)] = load
        offset += total
    return _summarize(measured, plan)


def _summarize(measured: dict[tuple[int, str], LoadResult], plan: Plan) -> ScenarioResult:
    table = Table(
        "Concurrent streaming clients",
        [
            "clients",
            "target",
            "agg tok/s",
            "TTFT p50",
            "TTFT p99",
            "ITL p50",
            "ITL p99",
            "TPOT p50",
            "chunks/req",
            "CPU/token",
            "client CPU/token",
            "seqs/step",
            "errors",
        ],
    )
    ratios = Table(
        "Concurrency ratios",
        [
            "clients",
            "agg tok/s: mlxd / mlx_lm.server",
            "agg tok/s: mlxd / raw engine",
            "TTFT p99: mlxd / mlx_lm.server",
        ],
    )
    headlines = []
    notes: list[str] = []
    for level in plan.concurrency_levels:
        rates, ttft_p99 = {}, {}
        for name in (MLXD, SEED, RAW):
            load = measured[(level, name)]
            ok = [r for r in load.results if r.error is None]
            notes += checks(f"{name}, {level} clients", load.results, plan.concurrency_tokens)
            rates[name] = load.tokens / load.wall if load.wall > 0 else float("nan")
            ttft50, ttft99 = p50_p99(ttfts(ok))
            ttft_p99[name] = ttft99
            itl50, itl99 = p50_p99(gaps(ok))
            chunks = sum(len(r.times) for r in ok) / len(ok) if ok else float("nan")
            table.rows.append(
                [
                    str(level),
                    name,
                    fmt(rates[name]),
                    fmt_ms(ttft50),
                    fmt_ms(ttft99),
                    fmt_ms(itl50),
                    fmt_ms(itl99),
                    fmt_ms(tpot(ok)),
                    fmt(chunks),
                    fmt_ms(load.cpu / max(1, load.tokens)),
                    fmt_ms(load.client_cpu / max(1, load.tokens)),
                    fmt(ratio(load.tokens, load.steps), 1),
                    str(load.errors),
                ]
            )
        vs_seed, vs_raw = ratio(rates[MLXD], rates[SEED]), ratio(rates[MLXD], rates[RAW])
        p99_vs_seed = ratio(ttft_p99[MLXD], ttft_p99[SEED])
        ratios.rows.append([str(level), fmt_ratio(vs_seed), fmt_ratio(vs_raw), fmt_ratio(p99_vs_seed)])
        goal_level = level == goals.CONCURRENT_LEVEL
        agg_goal = goals.CONCURRENT_VS_SEED if goal_level else None
        headlines.append(Headline(f"{level} clients, agg tok/s: mlxd / mlx_lm.server", vs_seed, agg_goal))
        headlines.append(Headline(f"{level} clients, agg tok/s: mlxd / raw engine", vs_raw))
        if goal_level:
            label = f"{level} clients, TTFT p99: mlxd / mlx_lm.server (lower is better)"
            headlines.append(Headline(label, p99_vs_seed, goals.CONCURRENT_TTFT_P99_VS_SEED))
    method = METHOD.format(
        tokens=plan.concurrency_tokens, waves=plan.concurrency_waves, least=plan.concurrency_min_requests
    )
    return ScenarioResult("concurrency", "2. Concurrent clients", method, [table, ratios], headlines, notes)


SCENARIO = Scenario("concurrency", "concurrent streaming clients", run, per_model=True)
