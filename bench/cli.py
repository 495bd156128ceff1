"""``python -m bench``: options, the run, the table and the report."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from rich.console import Console

from bench import report
from bench.clients import closed_loop, new_client, numbered_bodies
from bench.machine import RunInfo
from bench.plan import Plan, plan_for
from bench.prompts import request_messages
from bench.results import ScenarioResult
from bench.scenarios import ALL, BY_NAME, Context, Scenario
from bench.targets import Targets, start_targets

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"
_BUILD = "import sys, pathlib; from mlxd.runtime.demo_model import build_tiny_model; build_tiny_model(pathlib.Path(sys.argv[1]))"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few repetitions: a smoke run of a few minutes")
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in ALL),
        help=f"comma-separated subset of: {', '.join(BY_NAME)} (default: all)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the Markdown report")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per single-stream request")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        parser.error(
            f"unknown scenario(s): {', '.join(unknown) or '(none given)'}; choose from {', '.join(BY_NAME)}"
        )
    args.selected = [BY_NAME[n] for n in names]
    return args


def build_model(dest: Path) -> Path:
    """The tiny model, built in a subprocess so the harness never imports MLX."""
    subprocess.run([sys.executable, "-c", _BUILD, str(dest)], check=True)
    return dest


async def warm_up(targets: Targets) -> None:
    """Load mlxd's model and exercise every path once on each server and the engine."""
    for server in targets.servers:
        async with new_client(server.url, 16) as client:
            for stream in (True, False):
                await closed_loop(client, numbered_bodies(0, 16, stream=stream), 2, 1)
            await closed_loop(client, numbered_bodies(0, 16, stream=True), 32, 16)
    targets.raw.batch([request_messages(i) for i in range(16)], 16, 16)


async def run_scenarios(
    selected: list[Scenario], plan: Plan, workdir: Path, console: Console
) -> tuple[list[ScenarioResult], dict[str, str]]:
    """Run each scenario; one failing does not stop the others."""

    def say(message: str) -> None:
        console.log(message, style="dim")

    model_dir = build_model(workdir / "tiny")
    ctx = Context(plan, model_dir, workdir, say)
    results: list[ScenarioResult] = []
    failures: dict[str, str] = {}
    try:
        if any(s.needs_targets for s in selected):
            say("starting mlxd, mlx_lm.server and the raw engine")
            ctx.targets = start_targets(model_dir, workdir / "targets")
            await warm_up(ctx.targets)
        for scenario in selected:
            say(f"scenario: {scenario.title}")
            try:
                results.append(await scenario.run(ctx))
            except Exception:
                failures[scenario.name] = traceback.format_exc(limit=5)
                console.print(f"[red]{scenario.name} failed[/red]\n{failures[scenario.name]}")
    finally:
        if ctx.targets is not None:
            ctx.targets.close()
    return results, failures


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the tables, write the report; exit 1 if a scenario failed."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    console = Console(stderr=True)
    info = RunInfo(command=shlex.join(["python", "-m", "bench", *argv]), quick=args.quick)
    plan = plan_for(args.quick, args.tokens)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlxd-bench-") as tmp:
        results, failures = asyncio.run(run_scenarios(args.selected, plan, Path(tmp), console))
    info.seconds = time.perf_counter() - started
    report.show(Console(width=None if sys.stdout.isatty() else 160), results)
    report.write(args.out, info, results, failures)
    console.print(f"wrote {args.out}")
    if failures:
        raise SystemExit(1)
