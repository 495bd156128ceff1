"""Helpers the runtime tests share: driving a solo decoder, counting the one-row draw's
traces, asking the daemon's worker."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pytest

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


def count_draw_traces(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shapes the compiled one-row draw is traced for from now on (``_traced_draw`` looks
    ``_draw`` up at each trace; plain draws call it too, so count after drawing them)."""
    from mlxd.runtime.mlx import sampling

    traces: list[tuple[int, ...]] = []
    draw = sampling._draw

    def counted(logprobs: Any, scale: Any) -> Any:
        traces.append(tuple(logprobs.shape))
        return draw(logprobs, scale)

    monkeypatch.setattr(sampling, "_draw", counted)
    return traces


def on_worker(running: RunningDaemon, fn: Callable[[Any], Any]) -> Any:
    """``fn(worker)`` run on a daemon's MLX worker thread; its result."""
    from mlxd.runtime.mlx.commands import Call

    future: Future[Any] = Future()
    running.engine.submit(Call(fn, future))
    return future.result(30)
