"""Scenario 1: one client, one request at a time; decode tokens/s, streaming and not."""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict

from bench import goals
from bench.clients import RequestResult, chat_body, new_client, request
from bench.prompts import request_messages
from bench.results import Headline, ScenarioResult, Table, fmt, fmt_ms
from bench.scenarios.base import Context, Scenario, checks
from bench.servers import cpu_seconds
from bench.stats import median, ratio
from bench.targets import MLXD, RAW, SEED

METHOD = """\
One client sends one greedy chat request at a time for {tokens} tokens (the demo models
never emit EOS, so every request runs to `max_tokens`), {reps} repetitions per target
and mode, interleaved (the order rotates each repetition). tokens/s = `usage.completion_tokens`
/ wall time from sending the request to its last byte, so it includes the (short,
~27-token) prefill; "decode tok/s" leaves out the time to the first token. The raw engine
is `mlx_lm.generate.stream_generate` in its own process, timed from applying the chat
template to its last token, detokenizing as it goes; it is the floor for both modes.
Ratios are paired: the median over repetitions of mlxd's rate / the other's rate in the same
repetition (measured seconds apart), which cancels most of the drift of a shared machine.
"CPU/token" = user + system CPU time of the server process (all its threads) during the
mode's requests / tokens generated: less sensitive than wall time to other work on the machine."""

MODES = ((MLXD, "stream"), (MLXD, "whole"), (SEED, "stream"), (SEED, "whole"), (RAW, "stream"))


def _rate(result: RequestResult) -> float:
    if result.error is not None or result.duration <= 0:
        return math.nan
    return result.tokens / result.duration


def _decode_rate(result: RequestResult) -> float:
    span = result.times[-1] - result.times[0] if result.times else 0.0
    if result.tokens < 2 or span <= 0:
        return float("nan")  # one chunk (or two read at once): no decode pace to see
    return (result.tokens - 1) / span


async def run(ctx: Context) -> ScenarioResult:
    """Measure every target and mode, interleaved."""
    targets, plan = ctx.running(), ctx.plan
    samples: dict[tuple[str, str], list[RequestResult]] = defaultdict(list)
    cpu: dict[tuple[str, str], float] = defaultdict(float)
    numbers = itertools.count(10_000)
    urls = {MLXD: targets.mlxd.url, SEED: targets.seed.url}
    clients = {name: new_client(url, 2) for name, url in urls.items()}
    try:
        for rep in range(plan.single_reps):
            ctx.say(f"single stream: repetition {rep + 1}/{plan.single_reps}")
            shift = rep % len(MODES)
            for name, mode in MODES[shift:] + MODES[:shift]:
                messages = request_messages(next(numbers))
                before = cpu_seconds(targets.pid(name))
                if name == RAW:
                    result = targets.raw.single(messages, plan.single_tokens)
                else:
                    body = chat_body(messages, plan.single_tokens, stream=mode == "stream")
                    result = await request(clients[name], body, time.perf_counter())
                cpu[(name, mode)] += cpu_seconds(targets.pid(name)) - before
                samples[(name, mode)].append(result)
    finally:
        for client in clients.values():
            await client.aclose()
    return _summarize(samples, cpu, plan.single_tokens, plan.single_reps)


def _paired(mine: list[RequestResult], other: list[RequestResult]) -> float:
    """Median over repetitions of mlxd's rate / the other's rate in the same repetition."""
    pairs = [ratio(_rate(a), _rate(b)) for a, b in zip(mine, other, strict=False)]
    return median([p for p in pairs if not math.isnan(p)])


def _summarize(
    samples: dict[tuple[str, str], list[RequestResult]],
    cpu: dict[tuple[str, str], float],
    tokens: int,
    reps: int,
) -> ScenarioResult:
    table = Table(
        "Single stream",
        [
            "target",
            "mode",
            "tok/s (median)",
            "tok/s (min-max)",
            "decode tok/s",
            "TTFT",
            "chunks/req",
            "CPU/token",
            "errors",
        ],
    )
    rates: dict[tuple[str, str], float] = {}
    cpu_per_token: dict[tuple[str, str], float] = {}
    notes: list[str] = []
    for key in MODES:
        results = samples[key]
        notes += checks(f"{key[0]} {key[1]}", results, tokens)
        ok = [r for r in results if r.error is None]
        values = [_rate(r) for r in ok]
        rates[key] = median(values)
        cpu_per_token[key] = cpu[key] / max(1, sum(r.tokens for r in ok))
        spread = f"{fmt(min(values))}-{fmt(max(values))}" if values else "n/a"
        table.rows.append(
            [
                key[0],
                "streaming" if key[1] == "stream" else "non-streaming",
                fmt(rates[key]),
                spread,
                fmt(median([_decode_rate(r) for r in ok])) if key[1] == "stream" else "-",
                fmt_ms(median([r.ttft for r in ok])) if key[1] == "stream" else "-",
                fmt(median([len(r.times) for r in ok]), 0),
                fmt_ms(cpu_per_token[key]),
                str(len(results) - len(ok)),
            ]
        )
    headlines = []
    for mode, label in (("stream", "streaming"), ("whole", "non-streaming")):
        mine = samples[(MLXD, mode)]
        versus_raw = _paired(mine, samples[(RAW, "stream")])
        headlines.append(Headline(f"single {label}: mlxd / raw engine", versus_raw, goals.SINGLE_VS_RAW))
        versus_seed = _paired(mine, samples[(SEED, mode)])
        headlines.append(Headline(f"single {label}: mlxd / mlx_lm.server", versus_seed, goals.SINGLE_VS_SEED))
    for mode, label in (("stream", "streaming"), ("whole", "non-streaming")):
        cost = ratio(cpu_per_token[(MLXD, mode)], cpu_per_token[(RAW, "stream")])
        headlines.append(
            Headline(f"single {label}: CPU per token, mlxd / raw engine (lower is better)", cost)
        )
    ratios = Table("Single stream ratios", ["ratio", "value", "target", "verdict"])
    ratios.rows = [[h.label, h.shown, h.target, h.verdict] for h in headlines]
    return ScenarioResult(
        "single",
        "1. Single-stream decode",
        METHOD.format(tokens=tokens, reps=reps),
        [table, ratios],
        headlines,
        notes,
    )


SCENARIO = Scenario("single", "single-stream decode tokens/s", run, per_model=True)
