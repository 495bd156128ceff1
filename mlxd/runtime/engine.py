"""The engine interface: what the HTTP layer may ask of the runtime (no MLX here).

The HTTP layer turns a request plus the config into a ``GenerationRequest``
(``mlxd.runtime.requests``) and calls ``Engine.generate``; it gets back a
``GenerationStream`` of ``GenerationEvent``s. Tests wire a fake engine at this seam
(``tests/fakes``); the daemon wires ``MlxEngine``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mlxd.errors import MlxdError
from mlxd.output.events import Event, Finish
from mlxd.runtime.requests import EmbeddingRequest, Embeddings, GenerationRequest
from mlxd.runtime.specs import ModelSpec, RuntimeSettings, UnitKey


@dataclass(slots=True)
class GenerationEvent:
    """One delivery of a sequence's output: the typed output events ready now, cut by the
    sequence's output parser on the worker (stop strings, reasoning, tool calls), and how
    many tokens the sequence has generated. A ``Finish`` is always the last event."""

    events: list[Event]
    completion_tokens: int = 0

    @property
    def finish(self) -> Finish | None:
        """The sequence's ``Finish`` when this delivery ends it."""
        events = self.events
        last = events[-1] if events else None
        return last if isinstance(last, Finish) else None

    @classmethod
    def failure(cls, message: str, completion_tokens: int = 0) -> GenerationEvent:
        """The last delivery of a sequence that failed."""
        return cls([Finish("error", completion_tokens, message)], completion_tokens)


class GenerationStream(Protocol):
    """An admitted sequence: iterate it for the deliveries ready so far (the last one ends
    with a ``Finish``); ``cancel`` frees its slot. Iterating raises an ``MlxdError``
    instead when the engine ended the sequence early (``Engine.abort``)."""

    prompt_tokens: int
    cached_tokens: int

    def __aiter__(self) -> AsyncIterator[list[GenerationEvent]]: ...

    def cancel(self) -> None: ...


@dataclass(slots=True)
class LoadedModelStatus:
    """One loaded model as ``/mlxd/status`` shows it."""

    alias: str
    source: str
    state: str
    memory_bytes: int
    active_sequences: int
    idle_s: float


@dataclass(slots=True)
class EngineStatus:
    """A snapshot of the runtime."""

    worker: str
    models: list[LoadedModelStatus]
    active_sequences: int
    queue_depth: int
    batches: int = 0
    largest_batch: int = 0
    loads: int = 0
    prompt_tokens_processed: int = 0
    embedding_batches: int = 0
    embedded_inputs: int = 0
    memory: dict[str, int] = field(default_factory=dict)
    #: A distributed daemon's seconds per decode pass of each rank (empty in one process).
    rank_step_seconds: list[float] = field(default_factory=list)


class Engine(Protocol):
    """The runtime as the HTTP layer sees it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def generate(self, request: GenerationRequest) -> Sequence[GenerationStream]: ...

    async def count_tokens(self, request: GenerationRequest) -> int:
        """The prompt's length in tokens by the model's own template; generates nothing."""
        ...

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """Embed the request's inputs (batched with other requests' on the model's worker)."""
        ...

    async def load(self, alias: str, spec: ModelSpec, keep_alive: float) -> None: ...

    async def unload(self, alias: str) -> bool: ...

    def status(self) -> EngineStatus: ...

    def healthy(self) -> bool: ...

    def retire_unused(self, keys: set[UnitKey]) -> None: ...

    def abort(self, error: MlxdError) -> int:
        """End every running sequence and every admission from now on with ``error`` (the
        daemon is stopping); returns how many sequences were running."""
        ...

    def configure(self, settings: RuntimeSettings, units: Mapping[UnitKey, Collection[str]]) -> None:
        """Apply a config generation: new runtime settings, and the aliases that now name
        each unit (units no alias names retire once idle)."""
        ...
