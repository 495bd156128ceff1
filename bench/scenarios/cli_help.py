"""Scenario 7: wall time of ``mlxd --help`` (the CLI must not import MLX or the server)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from bench import goals
from bench.results import Headline, ScenarioResult, Table, fmt_ms
from bench.scenarios.base import Context, Scenario
from bench.stats import median

METHOD = """\
Each command runs as a fresh subprocess of the same Python, output discarded; median of
{reps} runs after one untimed run (warm file cache). `python -c pass` is the interpreter's
own start, the floor for any Python CLI."""

COMMANDS = (
    ("python -m mlxd --help", [sys.executable, "-m", "mlxd", "--help"]),
    ("python -m mlx_lm server --help", [sys.executable, "-m", "mlx_lm", "server", "--help"]),
    ("python -c pass", [sys.executable, "-c", "pass"]),
)


def _wall(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


async def run(ctx: Context) -> ScenarioResult:
    """Time each command."""
    table = Table("CLI start", ["command", "wall time (median)", "runs"])
    times: dict[str, float] = {}
    for label, argv in COMMANDS:
        ctx.say(f"timing {label}")
        await asyncio.to_thread(_wall, argv)
        runs = [await asyncio.to_thread(_wall, argv) for _ in range(ctx.plan.help_reps)]
        times[label] = median(runs)
        table.rows.append([label, fmt_ms(times[label]), str(len(runs))])
    headline = Headline("mlxd --help", times[COMMANDS[0][0]], goals.HELP_SECONDS, unit="s")
    return ScenarioResult(
        "help", "7. `mlxd --help`", METHOD.format(reps=ctx.plan.help_reps), [table], [headline]
    )


SCENARIO = Scenario("help", "mlxd --help wall time", run, needs_targets=False, uses_model=False)
