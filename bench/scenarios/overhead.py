"""Scenario 3: per-request overhead, as requests/s at ``max_tokens = 1``."""

from __future__ import annotations

from collections import defaultdict

from bench import goals
from bench.clients import LoadResult, closed_loop, new_client, numbered_bodies
from bench.prompts import request_messages
from bench.results import Headline, ScenarioResult, Table, fmt, fmt_ms
from bench.scenarios.base import Context, Scenario, checks, p50_p99
from bench.servers import cpu_seconds
from bench.stats import median, ratio
from bench.targets import MLXD, RAW, SEED

METHOD = """\
{clients} clients in a closed loop send greedy chat requests with `max_tokens = 1` (a unique
~27-token prompt each), {requests} requests per target and mode in each of {rounds} interleaved
round(s); requests/s = successful requests / wall time (median over rounds), latency =
request sent → response complete. The raw engine runs the same closed loop through one
`BatchGenerator` (tokenize, prefill, one token, detokenize), so the gap to it is pure
per-request server overhead: HTTP parsing, validation, scheduling, response encoding.
CPU/request = the server process's CPU time / requests."""

MODES = ((MLXD, False), (MLXD, True), (SEED, False), (SEED, True), (RAW, False))


async def run(ctx: Context) -> ScenarioResult:
    """Every target and mode, one round after another."""
    targets, plan = ctx.running(), ctx.plan
    clients, count = plan.overhead_concurrency, plan.overhead_requests
    measured: dict[tuple[str, bool], list[LoadResult]] = defaultdict(list)
    offset = 1_000_000
    for round_ in range(plan.overhead_rounds):
        for name, stream in MODES:
            ctx.say(f"overhead round {round_ + 1}: {name}{' streaming' if stream else ''}, {count} requests")
            before = cpu_seconds(targets.pid(name))
            if name == RAW:
                requests = [request_messages(offset + i) for i in range(count)]
                load = targets.raw.batch(requests, 1, clients)
            else:
                server = targets.mlxd if name == MLXD else targets.seed
                async with new_client(server.url, clients) as client:
                    load = await closed_loop(
                        client, numbered_bodies(offset, 1, stream=stream), count, clients
                    )
            load.cpu = cpu_seconds(targets.pid(name)) - before
            measured[(name, stream)].append(load)
            offset += count
    return _summarize(measured, plan.overhead_concurrency, count, plan.overhead_rounds)


def _summarize(
    measured: dict[tuple[str, bool], list[LoadResult]], clients: int, count: int, rounds: int
) -> ScenarioResult:
    table = Table(
        f"Requests/s at max_tokens = 1, {clients} clients",
        [
            "target",
            "mode",
            "req/s",
            "latency p50",
            "latency p99",
            "CPU/request",
            "client CPU/request",
            "errors",
        ],
    )
    rates: dict[tuple[str, bool], float] = {}
    notes: list[str] = []
    for key in MODES:
        loads = measured[key]
        notes += checks(
            f"{key[0]}{' streaming' if key[1] else ''}", [r for load in loads for r in load.results], 1
        )
        rates[key] = median([(len(load.results) - load.errors) / load.wall for load in loads])
        durations = [r.duration for load in loads for r in load.results if r.error is None]
        p50, p99 = p50_p99(durations)
        mode = "streaming" if key[1] else "non-streaming"
        errors = sum(load.errors for load in loads)
        sent = max(1, sum(len(load.results) for load in loads))
        cpu = sum(load.cpu for load in loads) / sent
        client = sum(load.client_cpu for load in loads) / sent
        row = [key[0], mode, fmt(rates[key], 1), fmt_ms(p50), fmt_ms(p99), fmt_ms(cpu), fmt_ms(client)]
        table.rows.append([*row, str(errors)])
        if len(loads) > 1:
            by_round = ", ".join(fmt(len(load.results) / load.wall, 1) for load in loads)
            notes.append(f"- {key[0]} {mode}: req/s by round: {by_round}.")
    label = f"max_tokens=1 req/s, {clients} clients"
    headlines = [
        Headline(
            f"{label}: mlxd / mlx_lm.server",
            ratio(rates[(MLXD, False)], rates[(SEED, False)]),
            goals.OVERHEAD_VS_SEED,
        ),
        Headline(f"{label}: mlxd / raw engine", ratio(rates[(MLXD, False)], rates[(RAW, False)])),
        Headline(
            f"{label}, streaming: mlxd / mlx_lm.server",
            ratio(rates[(MLXD, True)], rates[(SEED, True)]),
            goals.OVERHEAD_VS_SEED,
        ),
    ]
    ratios = Table("Overhead ratios", ["ratio", "value", "target", "verdict"])
    ratios.rows = [[h.label, h.shown, h.target, h.verdict] for h in headlines]
    method = METHOD.format(clients=clients, requests=count, rounds=rounds)
    return ScenarioResult("overhead", "3. Per-request overhead", method, [table, ratios], headlines, notes)


SCENARIO = Scenario("overhead", "requests/s at max_tokens = 1", run)
