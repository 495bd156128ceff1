"""The commands the event loop sends to the MLX worker thread: plain data, no MLX.

Both sides import this module and it imports neither of them, so the asyncio side never
imports the worker (whose module loads mlx-lm) and there is no import cycle.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlxd.errors import MlxdError, ModelLoadError
from mlxd.output.parser import OutputSpec
from mlxd.output.reasoning import ReasoningFormat
from mlxd.output.tool_calls import ToolFormat
from mlxd.runtime.engine import GenerationEvent
from mlxd.runtime.requests import Pooling, SamplingParams
from mlxd.runtime.specs import ModelSpec, RuntimeSettings, UnitKey

if TYPE_CHECKING:
    from mlxd.runtime.mlx.loading import LoadedModel

log = logging.getLogger("mlxd.runtime")


class Sink(Protocol):
    """Where a sequence's events go; called on the event loop."""

    cached_tokens: int

    def put(self, delivery: GenerationEvent) -> None: ...


@dataclass(slots=True)
class Choice:
    """One sequence of a request: ``n`` choices share the prompt and its prefill."""

    seq_id: int
    sampling: SamplingParams
    sink: Sink


@dataclass(slots=True)
class Insert:
    """Add a tokenized prompt's choices to its model's running batch."""

    key: UnitKey
    tokens: list[int]
    max_tokens: int
    #: What each choice's output parser enforces: stop strings, tools, a tool-call limit.
    output: OutputSpec
    logprobs: int | None
    choices: list[Choice]
    #: An llguidance grammar every choice must follow.
    grammar: str | None = None
    #: Seconds between two deliveries of a sequence's output (``None``: once, at the end).
    interval: float | None = 0.0
    #: The request's id: log lines the worker writes about these sequences carry it.
    request_id: str | None = None
    #: How the model writes tool calls, when the request offered tools.
    tool_format: ToolFormat | None = None
    #: A reasoning model's thinking tags, and whether the prompt opened the block.
    reasoning_format: ReasoningFormat | None = None
    #: Tokens the unit's draft model proposes per step while the request decodes alone.
    num_draft_tokens: int = 0
    #: A prompt with images (``vision.VisionPrompt``): prefilled as embeddings, then batched.
    vision: Any | None = None
    #: A raw prompt the output continues (a text completion): a space its first token starts
    #: with is part of the text, where a chat reply drops it.
    continues_text: bool = False


@dataclass(slots=True)
class Embed:
    """Embed token sequences with a loaded unit; the runner interleaves them with decoding.

    ``future`` gets one float32 numpy row per sequence, in order."""

    key: UnitKey
    tokens: list[list[int]]
    pooling: Pooling
    normalize: bool
    future: Future[Any]
    request_id: str | None = None


@dataclass(slots=True)
class Cancel:
    """Drop a sequence (its client left); it leaves the batch before the next step."""

    seq_id: int


@dataclass(slots=True)
class Load:
    """Load a model unit (base weights, shared, plus an optional adapter)."""

    key: UnitKey
    spec: ModelSpec
    path: Path
    future: Future[LoadedModel]
    #: The request that needed the model (None for preload and ``mlxd load``).
    request_id: str | None = None


@dataclass(slots=True)
class Unload:
    """Free a model unit; its base weights go when no unit uses them."""

    key: UnitKey
    future: Future[bool]


@dataclass(slots=True)
class Configure:
    """New ``[runtime]`` settings: every runner applies them before its next step."""

    settings: RuntimeSettings


@dataclass(slots=True)
class Call:
    """Run ``fn(worker)`` on the worker thread (tests, introspection)."""

    fn: Callable[[Any], Any]
    future: Future[Any]


class Shutdown:
    """Leave the loop and release MLX's thread state."""


Command = Insert | Embed | Cancel | Load | Unload | Configure | Call | Shutdown


def settle(future: Future[Any], fn: Callable[[], Any]) -> None:
    """Resolve a command's future with what ``fn`` returns or raises (any failure an ``MlxdError``)."""
    try:
        future.set_result(fn())
    except MlxdError as exc:
        future.set_exception(exc)
    except Exception as exc:
        log.exception("worker command failed")
        future.set_exception(ModelLoadError(f"{type(exc).__name__}: {exc}"))
    except BaseException:
        # The worker itself is going down: whoever waits on this command must not hang.
        future.set_exception(ModelLoadError("the engine restarted; try again"))
        raise


def drain(commands: queue.SimpleQueue[Command]) -> list[Command]:
    """Every command queued right now, in order, without waiting for more."""
    out: list[Command] = []
    while True:
        try:
            out.append(commands.get_nowait())
        except queue.Empty:
            return out


def abandon(commands: Iterable[Command], error: MlxdError) -> list[tuple[Sink, GenerationEvent]]:
    """Fail commands no worker will run, so nobody waits on them forever: each future gets
    ``error``, and each inserted choice a failure event, returned for ``deliver`` on the loop."""
    failed = GenerationEvent.failure(error.message)
    out: list[tuple[Sink, GenerationEvent]] = []
    for command in commands:
        if isinstance(command, Insert):
            out.extend((choice.sink, failed) for choice in command.choices)
        elif isinstance(command, Load | Unload | Call | Embed) and not command.future.done():
            command.future.set_exception(error)
    return out


def deliver(events: list[tuple[Sink, GenerationEvent]]) -> None:
    """Hand each event to its sequence's sink (on the event loop)."""
    for sink, event in events:
        sink.put(event)
