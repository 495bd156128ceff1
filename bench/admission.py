"""Bursts of requests: how long the last of them waits for its first token, and what each costs
the event loop.

``python -m bench.admission [--clients N] [--rounds R] [--model-dir DIR]`` serves a tiny model
(or ``DIR``) with mlxd and with ``mlx_lm.server`` and sends each, in turn, ``R`` bursts of ``N``
streaming chat requests at once (unique ~27-token prompts, 4 tokens each), every client over a
connection of its own that it keeps (as each app holds its own SDK client). Per burst: the
time to first token of the median and of the last request. For mlxd also the CPU time of its
main thread per request, which is the event loop: HTTP parsing, validation, translation and
the response for every request of a burst run there one after another before the worker can
prefill them together, so this is the serial share of the time to first token (Linux, where
``/proc`` has it per thread; elsewhere the column is empty). Prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.clients import chat_body, new_client, request
from bench.prompts import request_messages
from bench.servers import (
    ServerProcess,
    cpu_seconds,
    mlxd_config,
    model_table,
    start_mlx_lm,
    start_mlxd_with,
    thread_cpu_seconds,
)

TOKENS = 4


@dataclass
class Bursts:
    """One server's bursts: each burst's times to first token, and CPU time per request."""

    name: str
    ttfts: list[list[float]] = field(default_factory=list)
    errors: int = 0
    process_cpu: float = float("nan")
    loop_cpu: float | None = None

    def row(self, clients: int) -> str:
        if not self.ttfts:
            return f"| {self.name} | {clients} | – | – | – | – | – | {self.errors} |"
        median = statistics.median(statistics.median(burst) for burst in self.ttfts) * 1e3
        last = [max(burst) * 1e3 for burst in self.ttfts]
        loop = f"{self.loop_cpu * 1e3:.2f} ms" if self.loop_cpu is not None else "n/a"
        return (
            f"| {self.name} | {clients} | {median:.1f} ms | {statistics.median(last):.1f} ms | "
            f"{min(last):.1f}-{max(last):.1f} ms | {loop} | {self.process_cpu * 1e3:.2f} ms | {self.errors} |"
        )


async def _burst(clients: list[httpx.AsyncClient], offset: int, into: Bursts | None) -> None:
    origin = time.perf_counter()
    bodies = [chat_body(request_messages(offset + i), TOKENS, stream=True) for i in range(len(clients))]
    results = await asyncio.gather(*(request(c, b, origin) for c, b in zip(clients, bodies, strict=True)))
    if into is not None:
        into.errors += sum(1 for r in results if r.error is not None)
        served = [r.ttft for r in results if r.error is None]
        if served:  # a burst whose every request failed has no time to first token
            into.ttfts.append(served)


async def measure(server: ServerProcess, name: str, clients: int, rounds: int, offset: int) -> Bursts:
    """``rounds`` bursts of ``clients`` requests to ``server`` after two unmeasured ones."""
    bursts = Bursts(name)
    async with contextlib.AsyncExitStack() as stack:
        pool = [await stack.enter_async_context(new_client(server.url, 1)) for _ in range(clients)]
        for warm in range(2):  # connections opened, shapes seen
            await _burst(pool, offset + warm * clients, None)
        cpu, loop = cpu_seconds(server.pid), thread_cpu_seconds(server.pid, server.pid)
        for index in range(rounds):
            await _burst(pool, offset + (index + 2) * clients, bursts)
        requests = rounds * clients
        bursts.process_cpu = (cpu_seconds(server.pid) - cpu) / requests
        after = thread_cpu_seconds(server.pid, server.pid)
        if loop is not None and after is not None and name == "mlxd":
            bursts.loop_cpu = (after - loop) / requests
    return bursts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.admission", description=__doc__)
    parser.add_argument("--clients", type=int, default=64, help="requests per burst (default 64)")
    parser.add_argument("--rounds", type=int, default=20, help="measured bursts per server (default 20)")
    parser.add_argument("--model-dir", type=Path, help="a model directory (default: a tiny random llama)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model_dir
        if model is None:
            from mlxd.runtime.demo_model import build_tiny_model

            model = build_tiny_model(Path(tmp) / "model")
        config = mlxd_config(model_table("bench", model, default=True))
        servers = [("mlxd", start_mlxd_with(config, Path(tmp) / "mlxd"))]
        servers.append(("mlx_lm.server", start_mlx_lm(model, Path(tmp) / "seed")))
        results: list[Bursts] = []
        try:
            for name, server in servers:
                server.wait_healthy()
                print(f"{name}: {args.rounds} bursts of {args.clients}", file=sys.stderr, flush=True)
                results.append(
                    asyncio.run(measure(server, name, args.clients, args.rounds, len(results) * 10**6))
                )
        finally:
            for _, server in servers:
                server.stop()
    print(
        f"Bursts of {args.clients} streaming requests at once ({args.rounds} per server, {TOKENS} tokens "
        f"each, `{model.name}`): time to first token of the burst's median request and of its last "
        "(median over bursts, and its range), CPU time per request of mlxd's event loop (its main "
        "thread) and of each whole server process.\n"
    )
    print(
        "| server | burst | TTFT, median request | TTFT, last request | last, range | event loop CPU "
        "/ request | process CPU / request | errors |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for bursts in results:
        print(bursts.row(args.clients))


if __name__ == "__main__":
    main()
