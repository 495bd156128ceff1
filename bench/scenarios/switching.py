"""Scenario 6: switching between two aliases that share a base model (one with a LoRA
adapter), and between two models when only one may stay loaded."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.clients import RequestResult, chat_body, new_client, request
from bench.models import build_adapter
from bench.prompts import request_messages
from bench.results import Headline, ScenarioResult, Table, fmt_ms, fmt_ratio
from bench.scenarios.base import Context, Scenario, checks, p50_p99
from bench.servers import ServerProcess, mlxd_config, model_table, start_mlx_lm, start_mlxd_with
from bench.stats import ratio
from bench.targets import MLXD, SEED

METHOD = """\
One client sends non-streaming greedy chat requests for {tokens} tokens, one at a time, each
with a unique short prompt; latency = request sent → response complete, {requests} requests per
pattern and server. "Adapter": two mlxd aliases on the same base model ({model}), one plain
and one with a LoRA adapter (`build_lora_adapter`: rank 4 on every layer), `max_loaded_models
= 2`; mlx_lm.server gets the same pairs through its request fields `model` (the base's
directory) and `adapters` (the adapter's directory). "Model": two models of the same size
with different random weights (seeds 0 and 1), mlxd with `max_loaded_models = 1` (so each
switch unloads one and loads the other); mlx_lm.server gets the directory in `model` (it holds
one model at a time). Patterns: each alias repeated, and the two alternating (every request a
switch); before each pattern one untimed request puts the server in the state the pattern
repeats. Switch cost = alternating p50 − the mean of the two repeated p50s. Fresh processes for
this scenario (mlxd with `keep_alive = "forever"`), each alias loaded once before timing."""


@dataclass(frozen=True)
class Route:
    """One alias as each server is asked for it: fields added to the request body."""

    name: str
    mlxd: dict[str, str]
    seed: dict[str, str]


@dataclass(frozen=True)
class Part:
    """Two routes to switch between, and the mlxd config that serves them."""

    title: str
    first: Route
    second: Route
    config: str

    def patterns(self) -> list[tuple[str, tuple[Route, ...]]]:
        """Each route repeated, then both alternating."""
        return [
            (f"{self.first.name}, repeated", (self.first,)),
            (f"{self.second.name}, repeated", (self.second,)),
            ("alternating", (self.first, self.second)),
        ]


def _parts(base: Path, adapter: Path, other: Path) -> list[Part]:
    plain = Route("plain", {"model": "plain"}, {"model": str(base)})
    adapted = Route("adapter", {"model": "adapter"}, {"model": str(base), "adapters": str(adapter)})
    shared = model_table("plain", base, default=True) + "\n" + model_table("adapter", base, adapter=adapter)
    first = Route("model A", {"model": "model-a"}, {"model": str(base)})
    second = Route("model B", {"model": "model-b"}, {"model": str(other)})
    two = model_table("model-a", base, default=True) + "\n" + model_table("model-b", other)
    return [
        Part("Adapter on a shared base", plain, adapted, mlxd_config(shared, max_loaded_models=2)),
        Part("Two models, max_loaded_models = 1", first, second, mlxd_config(two, max_loaded_models=1)),
    ]


class _Asker:
    """Sequential requests to one server, numbered so every prompt is new."""

    def __init__(self, server: ServerProcess, name: str, tokens: int, numbers: Iterator[int]) -> None:
        self.server, self.name, self.tokens, self.numbers = server, name, tokens, numbers

    def body(self, route: Route) -> dict[str, Any]:
        body = chat_body(request_messages(next(self.numbers)), self.tokens, stream=False)
        body.update(route.mlxd if self.name == MLXD else route.seed)
        return body

    async def pattern(self, routes: tuple[Route, ...], count: int) -> list[RequestResult]:
        """One untimed request to the cycle's last route, then ``count`` timed ones through the cycle."""
        async with new_client(self.server.url, 1) as client:
            primer = await request(client, self.body(routes[-1]), time.perf_counter())
            if primer.error is not None:
                raise RuntimeError(f"{self.name}: {routes[-1].name} failed: {primer.error}")
            cycle = itertools.cycle(routes)
            return [await request(client, self.body(next(cycle)), time.perf_counter()) for _ in range(count)]


async def _measure(ctx: Context, part: Part, index: int) -> dict[tuple[str, str], list[RequestResult]]:
    """Every pattern on both servers, freshly started for this part."""
    workdir = ctx.workdir / f"switch-{index}"
    mlxd = start_mlxd_with(part.config, workdir / "mlxd")
    seed = start_mlx_lm(ctx.model_dir, workdir / "mlx_lm")
    numbers = itertools.count(2_000_000 + index * 100_000)
    try:
        await asyncio.gather(asyncio.to_thread(mlxd.wait_healthy), asyncio.to_thread(seed.wait_healthy))
        askers = [_Asker(mlxd, MLXD, ctx.plan.switch_tokens, numbers)]
        askers.append(_Asker(seed, SEED, ctx.plan.switch_tokens, numbers))
        for asker in askers:  # load every alias once
            await asker.pattern((part.first, part.second), 1)
        measured: dict[tuple[str, str], list[RequestResult]] = {}
        for pattern, routes in part.patterns():
            for asker in askers:
                ctx.say(f"switching, {part.title.lower()}: {pattern}, {asker.name}")
                measured[(pattern, asker.name)] = await asker.pattern(routes, ctx.plan.switch_requests)
        return measured
    finally:
        mlxd.stop()
        seed.stop()


async def run(ctx: Context) -> ScenarioResult:
    """Build the adapter and the second model, then measure both parts."""
    ctx.say("switching: building a LoRA adapter and a second model")
    adapter = await asyncio.to_thread(build_adapter, ctx.model_dir, ctx.workdir / "switch-adapter")
    other = await asyncio.to_thread(ctx.model.build, ctx.workdir / f"{ctx.model.name}-seed1", 1)
    latency = Table(
        "Per-request latency",
        ["switch", "pattern", "target", "latency p50", "latency p99", "errors"],
    )
    costs = Table(
        "Switch cost and ratios",
        [
            "switch",
            "switch cost: mlxd",
            "switch cost: mlx_lm.server",
            "alternating p50: mlxd / mlx_lm.server",
            "alternating p99: mlxd / mlx_lm.server",
        ],
    )
    headlines: list[Headline] = []
    notes: list[str] = []
    for index, part in enumerate(_parts(ctx.model_dir, adapter, other)):
        measured = await _measure(ctx, part, index)
        p50: dict[tuple[str, str], float] = {}
        p99: dict[tuple[str, str], float] = {}
        for (pattern, name), results in measured.items():
            notes += checks(f"{part.title}, {pattern}, {name}", results, ctx.plan.switch_tokens)
            durations = [r.duration for r in results if r.error is None]
            p50[(pattern, name)], p99[(pattern, name)] = p50_p99(durations)
            errors = sum(1 for r in results if r.error is not None)
            row = [part.title, pattern, name, fmt_ms(p50[(pattern, name)]), fmt_ms(p99[(pattern, name)])]
            latency.rows.append([*row, str(errors)])
        repeated = [pattern for pattern, routes in part.patterns() if len(routes) == 1]

        def cost(name: str, repeated: list[str] = repeated, p50: dict[tuple[str, str], float] = p50) -> float:
            baseline = sum(p50[(pattern, name)] for pattern in repeated) / len(repeated)
            return p50[("alternating", name)] - baseline

        vs_seed_p50 = ratio(p50[("alternating", MLXD)], p50[("alternating", SEED)])
        vs_seed_p99 = ratio(p99[("alternating", MLXD)], p99[("alternating", SEED)])
        row = [part.title, fmt_ms(cost(MLXD)), fmt_ms(cost(SEED)), fmt_ratio(vs_seed_p50)]
        costs.rows.append([*row, fmt_ratio(vs_seed_p99)])
        short = "adapter" if index == 0 else "model"
        headlines += [
            Headline(f"{short} switching, latency p50: mlxd / mlx_lm.server (lower is better)", vs_seed_p50),
            Headline(f"{short} switching, latency p99: mlxd / mlx_lm.server (lower is better)", vs_seed_p99),
            Headline(f"{short} switch cost: mlxd", cost(MLXD) * 1000, unit="ms"),
        ]
    method = METHOD.format(
        tokens=ctx.plan.switch_tokens, requests=ctx.plan.switch_requests, model=ctx.model.name
    )
    return ScenarioResult(
        "switch", "6. Switching aliases and models", method, [latency, costs], headlines, notes
    )


SCENARIO = Scenario("switch", "switching aliases (LoRA adapter) and models", run, needs_targets=False)
