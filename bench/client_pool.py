"""Simulated users spread over several client processes, as real users' apps are.

One Python process reading 64 streams at once is itself a bottleneck: its event loop takes
each chunk of each stream in turn, so the last first-token of a round is stamped late by the
client, not the server. A ``ClientPool`` gives each of ``processes`` processes its share of
the users, each user a client of its own with one kept connection (as each app holds its own
SDK client). A round's requests start together: every process waits for the same instant,
then times its requests from there, and sends its results back.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from bench.clients import LoadResult, RequestResult, new_client, request

#: How far ahead a round's start is set, so that every process is waiting for it.
START_AHEAD_S = 0.05


class PipedProcesses:
    """Client processes, each running ``target(pipe, *args)`` with its end of a pipe of its
    own (``pipes`` holds ours); ``close`` sends each ``None``, which ends it."""

    def __init__(self, target: Callable[..., None], args: list[tuple[Any, ...]]) -> None:
        context = multiprocessing.get_context("spawn")  # the bench process holds MLX's threads
        self.pipes: list[Connection] = []
        self._processes: list[Any] = []
        for each in args:
            mine, theirs = context.Pipe()
            process = context.Process(target=target, args=(theirs, *each), daemon=True)
            process.start()
            self.pipes.append(mine)
            self._processes.append(process)

    def close(self) -> None:
        """End the processes (their connections close with them)."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):  # the process is gone already
                pipe.send(None)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


class ClientPool:
    """``users`` kept clients of ``url`` in ``processes`` processes; ``close`` ends them."""

    def __init__(self, url: str, users: int, processes: int) -> None:
        self._shares = [len(range(i, users, processes)) for i in range(processes)]
        self._processes = PipedProcesses(_serve, [(url, share) for share in self._shares])
        self._pipes = self._processes.pipes

    async def round(self, bodies: list[dict[str, Any]]) -> LoadResult:
        """Send ``bodies`` at once, request ``i`` from user ``i``; the round ends with its last."""
        start_at = time.monotonic() + START_AHEAD_S
        parts: list[list[dict[str, Any]]] = [bodies[i :: len(self._pipes)] for i in range(len(self._pipes))]
        for pipe, part, share in zip(self._pipes, parts, self._shares, strict=True):
            if len(part) > share:
                raise ValueError(f"{len(bodies)} requests for a pool of {sum(self._shares)} users")
            pipe.send((start_at, part))
        loop = asyncio.get_running_loop()
        answers = await asyncio.gather(*(loop.run_in_executor(None, pipe.recv) for pipe in self._pipes))
        results: list[RequestResult] = [r for found, _ in answers for r in found]
        wall = max((r.end for r in results), default=0.0)
        return LoadResult(wall, results, client_cpu=sum(cpu for _, cpu in answers))

    def close(self) -> None:
        """End the client processes (their connections close with them)."""
        self._processes.close()


def _serve(pipe: Connection, url: str, users: int) -> None:
    asyncio.run(_rounds(pipe, url, users))


async def _rounds(pipe: Connection, url: str, users: int) -> None:
    clients = [new_client(url, 1) for _ in range(users)]
    loop = asyncio.get_running_loop()
    try:
        while (message := await loop.run_in_executor(None, pipe.recv)) is not None:
            start_at, bodies = message
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
            origin, cpu = time.perf_counter(), time.process_time()
            results = await asyncio.gather(
                *(request(client, body, origin) for client, body in zip(clients, bodies, strict=False))
            )
            pipe.send((list(results), time.process_time() - cpu))
    finally:
        for client in clients:
            await client.aclose()
