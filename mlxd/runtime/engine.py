"""The engine interface: what the HTTP layer may ask of the runtime (no MLX here).

The HTTP layer turns a request plus the config into a ``GenerationRequest`` and calls
``Engine.generate``; it gets back a ``GenerationStream`` of ``GenerationEvent``s.
Tests wire a fake engine at this seam (``tests/fakes``); the daemon wires ``MlxEngine``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from mlxd.errors import MlxdError
from mlxd.output.events import TokenInfo
from mlxd.output.reasoning import ReasoningFormat
from mlxd.output.tool_calls import ToolFormat

FinishReason = Literal["stop", "length", "cancelled", "error"]
#: A loaded model unit: (source, revision, adapter path).
UnitKey = tuple[str, str | None, str | None]


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """The ``[runtime]`` settings the engine applies (memory budget already in bytes).

    A config edit hands the engine a new instance: the limits apply at once, the batch
    size and prefill step at the next decode step, the prompt-cache budget at once
    (shrinking evicts)."""

    max_loaded_models: int = 2
    memory_budget_bytes: int = 2**40
    max_batch_size: int = 16
    max_queue: int = 64
    prefill_step_size: int = 256
    prompt_cache_bytes: int = 2 * 10**9


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What to load for an alias: base weights (shared by key) plus an optional adapter."""

    source: str
    revision: str | None = None
    local_path: Path | None = None
    adapter_path: Path | None = None
    context_length: int | None = None
    #: What status output shows (never an absolute path).
    label: str = ""

    @property
    def base_key(self) -> tuple[str, str | None]:
        """Aliases with equal base keys share one copy of the weights."""
        return (self.source, self.revision)

    @property
    def key(self) -> UnitKey:
        """The loaded unit: base weights plus adapter."""
        return (self.source, self.revision, str(self.adapter_path) if self.adapter_path else None)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Every sampling field of a request, resolved against the config defaults."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    repetition_context_size: int = 20
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    seed: int | None = None

    @property
    def sampler_key(self) -> tuple[float, float, int, float]:
        """Requests with equal keys (and no seed) can share one batched sampler."""
        return (self.temperature, self.top_p, self.top_k, self.min_p)


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A conversation to render with the model's chat template (or ``role_mapping``)."""

    messages: tuple[Mapping[str, Any], ...]
    role_mapping: Mapping[str, str] | None = None
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: OpenAI tool definitions, rendered by the chat template; calls are parsed from the output.
    tools: tuple[Mapping[str, Any], ...] | None = None


@dataclass(frozen=True, slots=True)
class TextPrompt:
    """A raw prompt: text, or token ids."""

    text: str | None = None
    tokens: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Constraint:
    """Output that must match a JSON schema (``None``: any JSON object), optionally as a tool
    call wrapped in the model's own tool-call tags.

    ``or_calls`` (the schema of one call, for tools offered with ``tool_choice: "auto"``)
    lets the output be tool calls instead of the JSON content: one, or with ``many_calls``
    as many as the model writes.
    """

    schema: Mapping[str, Any] | None
    tool_call: bool = False
    or_calls: Mapping[str, Any] | None = None
    many_calls: bool = True


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One sequence to generate, fully resolved."""

    #: The id log lines about this request carry, on any thread (the runtime prefers the
    #: HTTP request's ``X-Request-Id`` when one is being served).
    request_id: str
    alias: str
    spec: ModelSpec
    prompt: ChatPrompt | TextPrompt
    max_tokens: int
    sampling: SamplingParams = SamplingParams()
    stop: tuple[str, ...] = ()
    #: ``None``: no logprobs; ``k``: the sampled token's logprob plus the top k alternatives.
    logprobs: int | None = None
    #: True when the client set max_tokens itself (then exceeding the context is an error).
    max_tokens_explicit: bool = False
    keep_alive: float = 900.0
    #: Choices to generate from the one prompt (they share its prefill and decode together).
    n: int = 1
    #: Structured output enforced by constrained decoding.
    constraint: Constraint | None = None
    #: How often output reaches the stream, in seconds: ``0`` at every decode step; more
    #: holds tokens back until that long after the previous delivery (the first and the
    #: last are never held); ``None`` delivers the whole output in one piece at the end.
    #: Every delivery wakes the event loop, so fewer of them leave more CPU for decoding.
    delivery_interval: float | None = 0.0


@dataclass(slots=True)
class GenerationEvent:
    """What one decode step produced for one sequence."""

    text: str = ""
    tokens: list[TokenInfo] | None = None
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0
    error: str | None = None


class GenerationStream(Protocol):
    """An admitted sequence: iterate it for the events ready so far (the last one
    carries ``finish_reason``); ``cancel`` frees its slot. Iterating raises an
    ``MlxdError`` instead when the engine ended the sequence early (``Engine.abort``)."""

    prompt_tokens: int
    cached_tokens: int
    #: How the model writes tool calls, when the request offered tools.
    tool_format: ToolFormat | None
    #: A reasoning model's thinking tags (chat requests only).
    reasoning_format: ReasoningFormat | None

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
    memory: dict[str, int] = field(default_factory=dict)


class Engine(Protocol):
    """The runtime as the HTTP layer sees it."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def generate(self, request: GenerationRequest) -> Sequence[GenerationStream]: ...

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
