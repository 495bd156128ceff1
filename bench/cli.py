"""``python -m bench``: options, the run, the table and the report."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from bench import accelerator, engine_options, gpu_models, models, profiled, report
from bench.clients import closed_loop, new_client, numbered_bodies
from bench.machine import RunInfo
from bench.models import BenchModel
from bench.plan import Plan, plan_for
from bench.prompts import request_messages
from bench.results import ScenarioResult
from bench.scenarios import ALL, BY_NAME, Context, Scenario
from bench.targets import Targets, start_targets

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run of a few minutes")
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in ALL),
        help=f"comma-separated subset of: {', '.join(BY_NAME)} (default: all)",
    )
    parser.add_argument(
        "--models",
        default=",".join(m.name for m in models.MODELS),
        help=f"comma-separated subset of: {', '.join(models.BY_NAME)} (default: all); "
        f"{', '.join(s.name for s in ALL if not s.per_model)} run on the first one only",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the Markdown report")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per single-stream request")
    parser.add_argument(
        "--model-dir",
        type=Path,
        action="append",
        default=[],
        help="measure this model directory (repeatable) instead of building --models",
    )
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="the accelerator comparison (raw BatchGenerator, mlx_lm.server, mlxd at 1/16/64 clients) "
        "on each --model-dir and --gpu-model; writes the GPU section of --out and leaves the rest of it",
    )
    parser.add_argument(
        "--gpu-model",
        action="append",
        default=[],
        choices=sorted(gpu_models.PRESETS),
        help="with --gpu: build this random bf16 model on the machine and measure it (repeatable)",
    )
    parser.add_argument(
        "--memory-rounds",
        type=int,
        default=None,
        help="with --gpu: rounds mlxd runs at the top level, its memory read after each (default 20)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="with --gpu: run mlxd under the sampling profiler, its folded stacks and timeline into this folder",
    )
    parser.add_argument(
        "--levels",
        type=lambda text: tuple(int(x) for x in text.split(",")),
        default=None,
        help="with --gpu: comma-separated client counts (default 16,64)",
    )
    parser.add_argument(
        "--keep-connections",
        action="store_true",
        help="with --gpu: each level's rounds reuse one client's connections (as SDK clients do), "
        "so TTFT leaves out connection setup",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="with --keep-connections: spread each level's simulated users over this many client "
        "processes, as users' apps are (default 1: one process reads every stream)",
    )
    parser.add_argument(
        "--timeline-only",
        action="store_true",
        help="with --profile: the timeline alone, no stack sampling (whose GIL time slows mlxd a little)",
    )
    parser.add_argument(
        "--engine-options",
        action="store_true",
        help="speculative decoding, the quantized KV cache and the disk prompt cache on the small "
        "model; writes their section of --out and leaves the rest of it",
    )
    args = parser.parse_args(argv)
    args.selected = [BY_NAME[n] for n in _names(parser, args.scenarios, BY_NAME, "scenario")]
    if args.model_dir:
        try:
            args.models = [models.BenchModel.from_dir(path) for path in args.model_dir]
        except ValueError as exc:
            parser.error(str(exc))
    elif args.gpu:
        if not args.gpu_model:
            parser.error("--gpu needs at least one --model-dir or --gpu-model")
        args.models = []
    else:
        args.models = [models.BY_NAME[n] for n in _names(parser, args.models, models.BY_NAME, "model")]
    return args


def _names(parser: argparse.ArgumentParser, given: str, known: Mapping[str, object], kind: str) -> list[str]:
    """The comma-separated names in ``given``; a parser error for an unknown one or none."""
    names = [n.strip() for n in given.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        parser.error(
            f"unknown {kind}(s): {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}"
        )
    return names


async def warm_up(targets: Targets, plan: Plan) -> None:
    """Load the servers' model and exercise every path once on each server and the engine."""
    clients = max(1, plan.warmup_clients)
    for server in targets.servers:
        async with new_client(server.url, clients) as client:
            for stream in (True, False):
                bodies = numbered_bodies(0, plan.warmup_tokens, stream=stream)
                await closed_loop(client, bodies, plan.warmup_requests, 1)
            if plan.warmup_clients:
                bodies = numbered_bodies(0, plan.warmup_tokens, stream=True)
                await closed_loop(client, bodies, 2 * plan.warmup_clients, plan.warmup_clients)
    targets.raw.batch([request_messages(i) for i in range(clients)], plan.warmup_tokens, clients)


async def run_model(
    model: BenchModel, scenarios: list[Scenario], plan: Plan, workdir: Path, console: Console
) -> tuple[list[ScenarioResult], dict[str, str]]:
    """Build one model, start the shared targets on it if needed, run the scenarios.

    One scenario failing does not stop the others.
    """

    def say(message: str) -> None:
        console.log(message, style="dim")

    say(f"building the {model.name} model")
    model_dir = await asyncio.to_thread(model.build, workdir / "model")
    ctx = Context(plan, model, model_dir, workdir, say)
    results: list[ScenarioResult] = []
    failures: dict[str, str] = {}
    try:
        if any(s.needs_targets for s in scenarios):
            say(f"starting mlxd, mlx_lm.server and the raw engine on the {model.name} model")
            ctx.targets = start_targets(model_dir, workdir / "targets")
            await warm_up(ctx.targets, plan)
        for scenario in scenarios:
            on = f"{model.name} model" if scenario.uses_model else ""
            say(f"scenario: {scenario.title}" + (f" ({on})" if on else ""))
            started = time.perf_counter()
            try:
                result = await scenario.run(ctx)
            except Exception:
                name = f"{scenario.name} ({on})" if on else scenario.name
                failures[name] = traceback.format_exc(limit=5)
                console.print(f"[red]{name} failed[/red]\n{failures[name]}")
                continue
            result.label(model.name if scenario.uses_model else "")
            result.seconds = time.perf_counter() - started
            results.append(result)
    finally:
        if ctx.targets is not None:
            ctx.targets.close()
    return results, failures


async def run_scenarios(
    selected: list[Scenario],
    run_models: list[BenchModel],
    quick: bool,
    tokens: int | None,
    workdir: Path,
    console: Console,
) -> tuple[list[ScenarioResult], dict[str, str]]:
    """Every model in turn: the per-model scenarios on each, the others on the first only.

    Results come back in report order: by scenario, then by model.
    """
    results: list[ScenarioResult] = []
    failures: dict[str, str] = {}
    for position, model in enumerate(run_models):
        scenarios = [s for s in selected if s.per_model or position == 0]
        if not scenarios:
            continue
        plan = plan_for(quick, tokens, model.name)
        done, failed = await run_model(model, scenarios, plan, workdir / model.name, console)
        results += done
        failures.update(failed)
    order = {s.name: i for i, s in enumerate(ALL)}
    rank = {m.name: i for i, m in enumerate(run_models)}
    results.sort(key=lambda r: (order.get(r.name, len(order)), rank.get(r.model, -1)))
    return results, failures


def run_gpu(args: argparse.Namespace, command: str, console: Console) -> None:
    """The accelerator comparison: its own section of the report, the rest left as it was."""
    plan = accelerator.GpuPlan.quick() if args.quick else accelerator.GpuPlan()
    if args.tokens:
        plan = replace(plan, tokens=args.tokens)
    if args.memory_rounds:
        plan = replace(plan, memory_rounds=args.memory_rounds)
    if args.levels:
        plan = replace(plan, levels=args.levels)
    if args.keep_connections:
        plan = replace(plan, keep_connections=True, client_processes=max(1, args.client_processes))
    info = RunInfo(command=command, quick=args.quick, models=tuple(args.models))
    started = time.perf_counter()
    if args.timeline_only:
        os.environ[profiled.RATE_VARIABLE] = "0"  # the daemons inherit it
    with tempfile.TemporaryDirectory(prefix="mlxd-bench-gpu-") as tmp:
        dirs = [model.path for model in args.models if model.path is not None]
        for preset in args.gpu_model:
            console.log(f"building the {preset} model", style="dim")
            dirs.append(gpu_models.build_in_subprocess(Path(tmp) / preset, preset))
        say = lambda message: console.log(message, style="dim")  # noqa: E731
        reports = asyncio.run(accelerator.run(dirs, Path(tmp), plan, say, profile=args.profile))
    info.seconds = time.perf_counter() - started
    section = accelerator.render(reports, plan, accelerator.describe(info))
    console.print(section)
    accelerator.write_section(args.out, section)
    console.print(f"wrote the GPU section of {args.out}")


def run_engine_options(args: argparse.Namespace, command: str, console: Console) -> None:
    """The engine options of mlx_lm.server: their own section of the report."""
    plan = engine_options.Plan.quick() if args.quick else engine_options.Plan()
    info = RunInfo(command=command, quick=args.quick, models=(models.SMALL,))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlxd-bench-options-") as tmp:
        say = lambda message: console.log(message, style="dim")  # noqa: E731
        section = asyncio.run(engine_options.run(Path(tmp), plan, say))
    info.seconds = time.perf_counter() - started
    text = engine_options.render(section, plan, info)
    console.print(text)
    report.write_section(args.out, text, engine_options.START, engine_options.END)
    console.print(f"wrote the engine-options section of {args.out}")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the tables, write the report; exit 1 if a scenario failed."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    console = Console(stderr=True)
    command = shlex.join(["python", "-m", "bench", *argv])
    if args.gpu:
        run_gpu(args, command, console)
        return
    if args.engine_options:
        run_engine_options(args, command, console)
        return
    info = RunInfo(command=command, quick=args.quick, models=tuple(args.models))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlxd-bench-") as tmp:
        run = run_scenarios(args.selected, args.models, args.quick, args.tokens, Path(tmp), console)
        results, failures = asyncio.run(run)
    info.seconds = time.perf_counter() - started
    report.show(Console(width=None if sys.stdout.isatty() else 160), results)
    report.write(args.out, info, results, failures)
    console.print(f"wrote {args.out}")
    if failures:
        raise SystemExit(1)
