"""Embedding requests from several client processes at once: a server's throughput under load.

One client sending one request after another measures a request's latency: the daemon
idles while the reply travels, the client decodes it and sends the next request. Apps that
index documents send several requests at once (LlamaIndex's async batches, a pool of RAG
workers), which lets the server overlap one request's HTTP and tokenizing with another's
forward pass and merge small requests into one batch. ``EmbedClients`` gives each of
``count`` processes a kept client of its own; in a round every process sends its share of
requests one after another, all starting at the same instant after a warm-up request each.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from multiprocessing.connection import Connection
from typing import Any

#: How far ahead a round's start is set once every process has warmed up.
START_AHEAD_S = 0.05


class EmbedClients:
    """``count`` client processes of ``url``; ``close`` ends them."""

    def __init__(self, url: str, count: int, fmt: str) -> None:
        context = multiprocessing.get_context("spawn")  # the bench process holds MLX's threads
        self._pipes: list[Connection] = []
        self._processes: list[Any] = []
        for _ in range(count):
            mine, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, url, fmt), daemon=True)
            process.start()
            self._pipes.append(mine)
            self._processes.append(process)

    def prepare(self, model: str, batch: int, requests: int, offset: int) -> None:
        """Each process warms its connection with one request of ``batch`` inputs and then
        waits; ``go`` starts the round: ``requests`` each, fresh inputs from ``offset``."""
        for i, pipe in enumerate(self._pipes):
            pipe.send((model, batch, requests, offset + i * requests * batch))
        for pipe in self._pipes:
            pipe.recv()  # warmed up

    def go(self) -> float:
        """Run the prepared round; the seconds from its start to the last reply."""
        start_at = time.monotonic() + START_AHEAD_S
        for pipe in self._pipes:
            pipe.send(start_at)
        return max(float(pipe.recv()) for pipe in self._pipes) - start_at

    def close(self) -> None:
        """End the client processes."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):  # the process is gone already
                pipe.send(None)
        for process in self._processes:
            process.join(timeout=5)


def _serve(pipe: Connection, url: str, fmt: str) -> None:
    import httpx

    from bench.embeddings import _embed, texts

    with httpx.Client(base_url=url, timeout=300) as client:
        while (round_ := pipe.recv()) is not None:
            model, batch, requests, offset = round_
            _embed(client, model, texts(batch, 10**7 + offset), fmt)
            pipe.send(True)
            time.sleep(max(0.0, pipe.recv() - time.monotonic()))
            for i in range(requests):
                _embed(client, model, texts(batch, offset + i * batch), fmt)
            pipe.send(time.monotonic())
