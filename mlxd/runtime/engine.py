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

import numpy as np
import numpy.typing as npt

from mlxd.errors import MlxdError
from mlxd.output.events import Event, Finish

#: A loaded model unit: (source, revision, adapter path, engine options or ``None``).
UnitKey = tuple[str, str | None, str | None, str | None]


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
    #: Where prompt prefixes are kept on disk (``None``: not at all).
    prompt_cache_dir: Path | None = None
    prompt_cache_disk_bytes: int = 0
    #: Shorter prefixes are not worth a file.
    prompt_cache_disk_min_tokens: int = 512


@dataclass(frozen=True, slots=True)
class KvSettings:
    """A quantized KV cache (mlx-lm's ``kv_bits``, ``kv_group_size``, ``quantized_kv_start``)."""

    bits: int
    group_size: int = 64
    #: Keys and values are quantized once a cache holds this many tokens.
    start: int = 5000

    @property
    def tag(self) -> str:
        """A short stable name for keys and file metadata."""
        return f"kv{self.bits}g{self.group_size}s{self.start}"


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
    #: How the weights split over the ranks of a distributed daemon ("tensor" or "pipeline").
    parallel: str = "tensor"
    #: A quantized KV cache for this unit's sequences.
    kv: KvSettings | None = None
    #: The unit whose model drafts tokens for speculative decoding (itself draft-free).
    draft: ModelSpec | None = None

    @property
    def base_key(self) -> tuple[str, str | None]:
        """Aliases with equal base keys share one copy of the weights (a pipeline's shards
        are other arrays than a tensor split's, so they are another copy)."""
        source = self.source if self.parallel == "tensor" else f"{self.source} ({self.parallel})"
        return (source, self.revision)

    @property
    def options(self) -> str | None:
        """The engine options that make a unit of their own over the same weights."""
        parts = []
        if self.kv is not None:
            parts.append(self.kv.tag)
        if self.draft is not None:
            draft = self.draft.key
            parts.append(f"draft={draft[0]}@{draft[1] or ''}+{draft[2] or ''}")
        return ",".join(parts) or None

    @property
    def key(self) -> UnitKey:
        """The loaded unit: base weights plus adapter, under its engine options (aliases
        that differ in KV quantization or draft model batch apart, sharing the weights)."""
        adapter = str(self.adapter_path) if self.adapter_path else None
        return (*self.base_key, adapter, self.options)


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
    #: XTC ("exclude top choices"): with this probability per token, drop every token more
    #: likely than ``xtc_threshold`` but the least likely of them.
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    #: How many recent tokens the presence and frequency penalties look at.
    presence_context_size: int = 20
    frequency_context_size: int = 20

    @property
    def sampler_key(self) -> tuple[float, float, int, float, float, float]:
        """Requests with equal keys (and no seed) can share one batched sampler."""
        return (
            self.temperature,
            self.top_p,
            self.top_k,
            self.min_p,
            self.xtc_probability,
            self.xtc_threshold,
        )


@dataclass(frozen=True, slots=True)
class ImageInput:
    """One image of a prompt, checked against the ``[limits]`` caps but not decoded yet:
    its encoded bytes (PNG, JPEG, …), their SHA-256 (the image's identity in prompt-cache
    keys) and where the request put it (errors name that place)."""

    data: bytes
    digest: str
    param: str
    #: An ``http(s)`` URL still to fetch (only with ``[server] allow_image_urls``).
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A conversation to render with the model's chat template (or ``role_mapping``).

    A message with images has list content: ``{"type": "text", "text": …}`` and
    ``{"type": "image"}`` parts, as vision chat templates take them; ``images`` are those
    images, in order."""

    messages: tuple[Mapping[str, Any], ...]
    role_mapping: Mapping[str, str] | None = None
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: OpenAI tool definitions, rendered by the chat template; calls are parsed from the output.
    tools: tuple[Mapping[str, Any], ...] | None = None
    #: The alias's own chat template (Jinja text from the config), in place of the model's.
    template: str | None = None
    images: tuple[ImageInput, ...] = ()


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
    #: At most this many tool calls (``parallel_tool_calls: false`` is 1): a choice ends as
    #: soon as its last allowed call closes.
    max_tool_calls: int | None = None
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
    #: Tokens the alias's draft model proposes per step when the sequence decodes alone
    #: (0: no speculative decoding).
    num_draft_tokens: int = 0


Pooling = Literal["last", "mean", "cls"]


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    """Inputs to embed with one model: texts or token ids, pooled and maybe normalized.

    ``pooling`` / ``normalize`` ``None``: as the model's sentence-transformers files say,
    else last-token pooling, normalized. ``dimensions`` keeps the first that many values
    and scales the result to unit length again."""

    request_id: str
    alias: str
    spec: ModelSpec
    inputs: tuple[str | tuple[int, ...], ...]
    pooling: Pooling | None = None
    normalize: bool | None = None
    dimensions: int | None = None
    keep_alive: float = 900.0
    #: Cut inputs longer than the context to fit (Ollama's ``truncate``) instead of a 400.
    truncate: bool = False


@dataclass(slots=True)
class Embeddings:
    """The vectors of an ``EmbeddingRequest`` (one float32 row per input, in order) and
    the tokens the inputs took."""

    vectors: npt.NDArray[np.float32]
    prompt_tokens: int


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
