"""Two ranks on the loopback ring: mlxd against ``mlx_lm.server`` launched the same way.

``python -m bench.distributed [--tokens N] [--rounds R] [--model-dir DIR]`` builds the
tiny model and serves it split tensor-parallel over two ranks (``mlx.launch --backend
ring -n 2`` on 127.0.0.1) with ``mlxd serve`` and ``[distributed]`` (which runs
``mlx.launch`` itself) and with ``mlx_lm.server`` under ``mlx.launch``, with the same
batch settings. Each
gets the same greedy streamed chat requests from 1 and then 16 closed-loop clients (a
warm-up first), one server at a time, in a few rounds whose order alternates (this
machine is shared: one pair alone says little); aggregate tokens/s = completion tokens
(from ``usage``) / wall time. One run; its section of ``bench/RESULTS.md`` (``--out``) sits
between its own markers, so full benchmark reruns keep it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench import goals, report
from bench.clients import LoadResult, closed_loop, new_client, numbered_bodies
from bench.models import TINY, BenchModel
from bench.servers import (
    HOST,
    MAX_BATCH_SIZE,
    PREFILL_BATCH_SIZE,
    PREFILL_STEP_SIZE,
    ServerProcess,
    _environment,
    free_port,
    mlxd_config,
    model_table,
    start_mlxd_with,
)

#: (clients, requests) per measurement: every client sends several requests.
LOADS = ((1, 6), (16, 48))
#: Aggregate tokens/s, mlxd / mlx_lm.server, both on two ranks: by client count.
GOALS = {1: goals.Goal(1.0), 16: goals.Goal(1.5)}
START = "<!-- distributed:start -->"
END = "<!-- distributed:end -->"


def _ring_port() -> int:
    """The first of two free ports for the ring's ranks."""
    while True:
        first = free_port()
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind((HOST, first + 1))
            return first


def start_mlxd_ranks(model_dir: Path, workdir: Path) -> ServerProcess:
    """``mlxd serve`` whose ``[distributed]`` runs two ranks on the loopback ring."""
    ranks = f'\n[distributed]\nhosts = ["{HOST}", "{HOST}"]\nport = {_ring_port()}\n'
    return start_mlxd_with(mlxd_config(model_table("bench", model_dir, default=True)) + ranks, workdir)


def start_mlx_lm_ranks(model_dir: Path, workdir: Path) -> ServerProcess:
    """``mlx_lm.server`` under ``mlx.launch`` with two ranks (rank 0 serves HTTP)."""
    port = free_port()
    launch = "import sys; from mlx._distributed_utils.launch import main; sys.exit(main())"
    argv = [
        sys.executable,
        "-c",
        launch,
        "--backend",
        "ring",
        "-n",
        "2",
        "--starting-port",
        str(_ring_port()),
    ]
    argv += ["--python", sys.executable, "--", "-m", "mlx_lm", "server", "--model", str(model_dir)]
    argv += ["--host", HOST, "--port", str(port), "--temp", "0"]
    argv += ["--decode-concurrency", str(MAX_BATCH_SIZE), "--prompt-concurrency", str(PREFILL_BATCH_SIZE)]
    argv += ["--prefill-step-size", str(PREFILL_STEP_SIZE)]
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "mlx_lm.server.log"
    with log_path.open("wb") as log:
        launched = time.perf_counter()
        process = subprocess.Popen(
            argv,
            cwd=workdir,
            env=_environment(workdir),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # mlx.launch leaves its ranks behind on SIGTERM: kill the group
        )
    return ServerProcess("mlx_lm.server", process, f"http://{HOST}:{port}", log_path, launched)


def stop_group(server: ServerProcess) -> None:
    """Stop a server and every process of its group (mlx.launch's ranks)."""
    server.stop()
    with contextlib.suppress(OSError):
        os.killpg(server.pid, signal.SIGKILL)


def wait_ranks(server: ServerProcess, timeout: float = 120.0) -> None:
    """Until mlxd says both ranks joined."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            if httpx.get(f"{server.url}/mlxd/status", timeout=5).json()["distributed"]["ranks_up"] == 2:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the ranks did not join:\n{server.log_tail()}")


async def measure(url: str, tokens: int) -> dict[int, LoadResult]:
    """A warm-up, then every load in ``LOADS``; results by client count."""
    out: dict[int, LoadResult] = {}
    async with new_client(url, 16) as client:
        await closed_loop(client, numbered_bodies(10_000, 8, stream=True), 4, 2)
        offset = 0
        for clients, total in LOADS:
            out[clients] = await closed_loop(
                client, numbered_bodies(offset, tokens, stream=True), total, clients
            )
            offset += total
    return out


#: One round: each server's results by client count.
Round = dict[str, dict[int, LoadResult]]
SERVERS = {"mlxd": start_mlxd_ranks, "mlx_lm.server": start_mlx_lm_ranks}


def run(model: BenchModel, tokens: int, rounds: int) -> list[Round]:
    """Both servers, one at a time, in ``rounds`` rounds on the same model; the order
    alternates, so load from outside the benchmark falls on both alike."""
    out: list[Round] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model.build(Path(tmp) / model.name)
        for index in range(rounds):
            names = list(SERVERS) if index % 2 == 0 else list(reversed(SERVERS))
            results: Round = {}
            for name in names:
                server = SERVERS[name](model_dir, Path(tmp) / f"{name}-{index}")
                try:
                    server.wait_healthy(180)
                    if name == "mlxd":
                        wait_ranks(server)
                    results[name] = asyncio.run(measure(server.url, tokens))
                finally:
                    stop_group(server)
            out.append(results)
    return out


def _rate(result: LoadResult) -> float:
    return result.tokens / result.wall


def render(model: BenchModel, tokens: int, rounds: list[Round], minutes: float) -> str:
    """The report's section: how it was measured and the table, between its markers."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        START,
        "## Several ranks: two on the loopback ring",
        "",
        f"Command: `python -m bench.distributed`; {when}, {minutes:.1f} minutes, one run of"
        f" {len(rounds)} rounds.",
        "",
        f"The {model.name} model split tensor-parallel over two ranks on this machine"
        " (`mlx.launch --backend ring`, both ranks on 127.0.0.1): `mlxd serve` with"
        ' `[distributed] hosts = ["127.0.0.1", "127.0.0.1"]` (it runs `mlx.launch` itself)'
        " against `mlx_lm.server` under `mlx.launch -n 2` with the same batch and prefill"
        " settings, one server at a time, the order alternating from round to round. Greedy"
        f" streamed chats of {tokens} tokens from closed-loop clients after a warm-up;"
        " tokens/s = completion tokens (from `usage`) / wall time. The verdict is on the"
        " median of the rounds' ratios.",
        "",
        "| clients | requests | mlxd tok/s by round | mlx_lm.server tok/s by round | ratio by round"
        " | median ratio | target | verdict | failed (mlxd, mlx_lm.server) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for clients, total in LOADS:
        ours = [_rate(r["mlxd"][clients]) for r in rounds]
        theirs = [_rate(r["mlx_lm.server"][clients]) for r in rounds]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        median = statistics.median(ratios)
        goal = GOALS[clients]
        verdict = "met" if goal.met(median) else f"missed by {goal.shortfall(median):.0f}%"
        failed = (sum(r[name][clients].errors for r in rounds) for name in SERVERS)
        lines.append(
            f"| {clients} | {total} | {', '.join(f'{v:.0f}' for v in ours)}"
            f" | {', '.join(f'{v:.0f}' for v in theirs)} | {', '.join(f'{v:.2f}×' for v in ratios)}"
            f" | {median:.2f}× | {goal.sign} {goal.bound:.1f}× | {verdict} | {', '.join(map(str, failed))} |"
        )
    for index, by_name in enumerate(rounds):
        for name, by_clients in by_name.items():
            for clients, result in by_clients.items():
                for error in [r.error for r in result.results if r.error][:3]:
                    lines += ["", f"Round {index + 1}, {name}, {clients} clients: {error}"]
    return "\n".join([*lines, "", END]) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the comparison, print its section and write it into the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.distributed", description=__doc__)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per request (default 128)")
    parser.add_argument("--model-dir", type=Path, help="a model directory to use instead of the tiny model")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both servers (default 3)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "RESULTS.md",
        help="the report to write the section into",
    )
    args = parser.parse_args(argv)
    model = BenchModel.from_dir(args.model_dir) if args.model_dir else TINY
    started = time.monotonic()
    rounds = run(model, args.tokens, args.rounds)
    section = render(model, args.tokens, rounds, (time.monotonic() - started) / 60)
    print(section)
    report.write_section(args.out, section, START, END)
    print(f"wrote the distributed section of {args.out}")


if __name__ == "__main__":
    main()
