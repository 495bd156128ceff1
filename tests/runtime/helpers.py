"""Helpers the runtime tests share: driving a solo decoder, asking the daemon's worker."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from tests.conftest import RunningDaemon


def run_alone(decoder: Any) -> list[int]:
    """Step a solo decoder (or a speculative one) to its end; its tokens."""
    out: list[int] = []
    while True:
        response = decoder.step()
        if response is None:
            continue
        out.append(response.token)
        if response.finish_reason is not None:
            return out


def on_worker(running: RunningDaemon, fn: Callable[[Any], Any]) -> Any:
    """``fn(worker)`` run on a daemon's MLX worker thread; its result."""
    from mlxd.runtime.mlx.commands import Call

    future: Future[Any] = Future()
    running.engine.submit(Call(fn, future))
    return future.result(30)
