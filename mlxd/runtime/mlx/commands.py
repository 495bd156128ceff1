"""The commands the event loop sends to the MLX worker thread (light: no MLX import).

The scheduler imports only this module and ``WorkerHandle``; the worker module, and with
it mlx-lm and transformers, is imported on the worker thread itself, so the daemon
answers ``/health`` while MLX is still loading.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlxd.runtime.engine import GenerationEvent, ModelSpec, SamplingParams

if TYPE_CHECKING:
    from mlxd.runtime.mlx.loading import LoadedModel
    from mlxd.runtime.mlx.worker import MlxWorker

Key = tuple[str, str | None, str | None]


class Sink(Protocol):
    """Where a sequence's events go; called on the event loop."""

    cached_tokens: int

    def put(self, event: GenerationEvent) -> None: ...


@dataclass(slots=True)
class Choice:
    """One sequence of a request: ``n`` choices share the prompt and its prefill."""

    seq_id: int
    sampling: SamplingParams
    sink: Sink


@dataclass(slots=True)
class Insert:
    """Add a tokenized prompt's choices to its model's running batch."""

    key: Key
    tokens: list[int]
    max_tokens: int
    stop: tuple[str, ...]
    logprobs: int | None
    choices: list[Choice]
    #: An llguidance grammar every choice must follow.
    grammar: str | None = None
    #: Seconds between two deliveries of a sequence's output (``None``: once, at the end).
    interval: float | None = 0.0


@dataclass(slots=True)
class Cancel:
    """Drop a sequence (its client left); it leaves the batch before the next step."""

    seq_id: int


@dataclass(slots=True)
class Load:
    """Load a model unit (base weights, shared, plus an optional adapter)."""

    key: Key
    spec: ModelSpec
    path: Path
    future: Future[LoadedModel]


@dataclass(slots=True)
class Unload:
    """Free a model unit; its base weights go when no unit uses them."""

    key: Key
    future: Future[bool]


@dataclass(slots=True)
class Call:
    """Run a function on the worker thread (tests, introspection)."""

    fn: Callable[[], Any]
    future: Future[Any]


class Shutdown:
    """Leave the loop and release MLX's thread state."""


Command = Insert | Cancel | Load | Unload | Call | Shutdown


class WorkerHandle:
    """Starts the worker thread, which imports MLX and then runs ``MlxWorker``; until then
    commands simply wait in the queue."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_batch_size: int,
        prefill_step_size: int,
        prompt_cache_bytes: int,
        on_crash: Callable[[BaseException], None],
    ) -> None:
        self.commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        self.worker: MlxWorker | None = None
        self._settings = (loop, max_batch_size, prefill_step_size, prompt_cache_bytes, on_crash)
        self._thread = threading.Thread(target=self._run, name="mlx-worker", daemon=True)

    def start(self) -> None:
        """Start the thread (returns at once)."""
        self._thread.start()

    def _run(self) -> None:
        from mlxd.runtime.mlx.worker import MlxWorker  # mlx-lm loads here, off the event loop

        loop, batch, prefill, cache, on_crash = self._settings
        self.worker = MlxWorker(
            loop,
            self.commands,
            max_batch_size=batch,
            prefill_step_size=prefill,
            prompt_cache_bytes=cache,
            on_crash=on_crash,
        )
        self.worker.run()

    def submit(self, command: Command) -> None:
        """Queue a command (thread-safe)."""
        self.commands.put(command)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the thread to finish and wait for it."""
        if self._thread.is_alive():
            self.commands.put(Shutdown())
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the thread runs (also while it is still importing MLX)."""
        return self._thread.is_alive() and (self.worker is None or self.worker.alive)

    def stat(self, name: str, default: Any = 0) -> Any:
        """A counter of the running worker (``default`` before it exists)."""
        return getattr(self.worker, name, default)
