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

import time
from multiprocessing.connection import Connection

from bench.client_pool import START_AHEAD_S, PipedProcesses


class EmbedClients:
    """``count`` client processes of ``url``; ``close`` ends them."""

    def __init__(self, url: str, count: int, fmt: str) -> None:
        self._processes = PipedProcesses(_serve, [(url, fmt)] * count)
        self._pipes = self._processes.pipes

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
        self._processes.close()


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
