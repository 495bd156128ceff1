"""What a request asks of the engine (no MLX here): a generation (prompt, sampling,
constraint, output options) or an embedding, each for one model spec.

The HTTP layer's dialect translators build these; admission checks them and the worker
runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mlxd.runtime.specs import ModelSpec


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
