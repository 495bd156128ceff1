"""Admission: whether a request may join its model's batch, and what the worker needs for it.

Off the MLX thread: the prompt is tokenized (chat template included) and a grammar
compiled on a small executor of their own, then checked against the model (context
length, vocabulary) and the queue. Everything a request can get wrong is a 400 here,
before the worker sees it.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from mlxd.errors import CapacityError, ContextLengthError, RequestError
from mlxd.output.parser import OutputSpec
from mlxd.output.reasoning import ReasoningFormat
from mlxd.output.tool_calls import ToolFormat
from mlxd.runtime.formats import compile_grammar, reasoning_format, tool_format
from mlxd.runtime.pooling import PoolingSpec
from mlxd.runtime.prompts import closing_tokens, cut_to_context, encode_inputs, encode_prompt, vision_prompt
from mlxd.runtime.requests import (
    ChatPrompt,
    EmbeddingRequest,
    GenerationRequest,
    Pooling,
    TextPrompt,
)
from mlxd.runtime.specs import RuntimeSettings

T = TypeVar("T")

#: An embedding request of one input up to this many characters is tokenized on the event
#: loop: tens of microseconds, where the hop to the tokenizer thread and back costs about
#: 0.1 ms (a request of one short input is the common case of indexers and RAG queries).
INLINE_INPUT_CHARS = 2048


class ModelFacts(Protocol):
    """What admission reads of a loaded model."""

    @property
    def tokenizer(self) -> Any: ...

    @property
    def context_length(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def pooling(self) -> PoolingSpec: ...

    @property
    def generates(self) -> bool:
        """False for an encoder embedding model, which only embeds."""
        ...

    @property
    def vision(self) -> Any | None:
        """The model's image support (``prepare`` a prompt with images), ``None`` for text only."""
        ...

    @property
    def images_hint(self) -> str | None:
        """For a text-only model that could take images: what to do for them (install mlx-vlm)."""
        ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed every check, ready to become an ``Insert``."""

    tokens: list[int]
    #: ``max_tokens``, trimmed to the room the context leaves.
    max_tokens: int
    tool_format: ToolFormat | None
    reasoning_format: ReasoningFormat | None
    grammar: str | None
    #: What the output parser of each choice enforces.
    output: OutputSpec
    #: A prompt with images: the pixels, where each image starts, and the cache key.
    vision: Any | None = None


@dataclass(frozen=True, slots=True)
class AdmittedEmbeddings:
    """Embedding inputs that passed every check: their tokens and how to pool them."""

    tokens: list[list[int]]
    pooling: Pooling
    normalize: bool


def check_capacity(alias: str, active: int, settings: RuntimeSettings) -> None:
    """429 once more sequences run or wait for a model than its batch plus the queue hold."""
    capacity = settings.max_batch_size + settings.max_queue
    if active > capacity:
        raise CapacityError(
            f"too many requests for {alias!r}: {capacity} running or waiting",
            retry_after=max(1, math.ceil(active / max(1, settings.max_batch_size))),
        )


def check_limits(request: GenerationRequest, model: ModelFacts, tokens: list[int]) -> int:
    """The request against its model's context and vocabulary; returns the ``max_tokens`` to use."""
    if not tokens:
        raise RequestError("the prompt is empty", param="prompt")
    # The alias's own override, when it has one: aliases share loaded weights, not contexts.
    context = request.spec.context_length or model.context_length
    if len(tokens) >= context:
        raise ContextLengthError(
            f"the prompt has {len(tokens)} tokens but {request.alias!r} has a context of {context}",
            param="messages",
        )
    room = context - len(tokens)
    if request.max_tokens_explicit and request.max_tokens > room:
        raise ContextLengthError(
            f"the prompt ({len(tokens)} tokens) plus max_tokens ({request.max_tokens}) exceed "
            f"the context of {context}",
            param="max_tokens",
        )
    vocab = model.vocab_size
    for token_id, _ in request.sampling.logit_bias:
        if not 0 <= token_id < vocab:
            raise RequestError(
                f"logit_bias token {token_id} is outside the vocabulary (0..{vocab - 1})", param="logit_bias"
            )
    if request.sampling.top_k > vocab:
        raise RequestError(f"top_k exceeds the vocabulary size ({vocab})", param="top_k")
    given = request.prompt.tokens if isinstance(request.prompt, TextPrompt) else None
    if given is not None and any(not 0 <= t < vocab for t in given):
        raise RequestError("a prompt token id is outside the vocabulary", param="prompt")
    return min(request.max_tokens, room)


class Admission:
    """Tokenizes and checks requests on a thread of its own (never the MLX worker)."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlxd-tokenize")

    async def admit(self, request: GenerationRequest, model: ModelFacts) -> Admitted:
        """Tokenize, check and compile; raises the 400 a request deserves."""
        if not model.generates:
            raise RequestError(
                f"{request.alias!r} is an embedding model: it cannot generate text "
                "(send its inputs to /v1/embeddings or /api/embed)",
                param="model",
            )
        prompt, vision = request.prompt, None
        if isinstance(prompt, ChatPrompt) and prompt.images:
            vision = await self._vision(request, prompt, model)
            tokens = vision.tokens
        else:
            tokens = await self._off_loop(encode_prompt, model.tokenizer, prompt)
        max_tokens = check_limits(request, model, tokens)
        tools = tool_format(request, model.tokenizer)
        reasoning = reasoning_format(request, model.tokenizer, tokens)
        grammar = None
        if request.constraint is not None:
            grammar = await self._off_loop(
                compile_grammar, request.constraint, tools, reasoning, model.tokenizer, max_tokens
            )
        offered = request.prompt.tools if isinstance(request.prompt, ChatPrompt) else None
        output = OutputSpec(request.stop, offered, request.max_tool_calls)
        return Admitted(tokens, max_tokens, tools, reasoning, grammar, output, vision)

    async def admit_embeddings(self, request: EmbeddingRequest, model: ModelFacts) -> AdmittedEmbeddings:
        """Tokenize the inputs and check each against the model; raises the 400 they deserve."""
        inputs = request.inputs
        if len(inputs) == 1 and len(inputs[0]) <= INLINE_INPUT_CHARS:
            tokens = encode_inputs(model.tokenizer, inputs)
        else:
            tokens = await self._off_loop(encode_inputs, model.tokenizer, inputs)
        context, vocab = model.context_length, model.vocab_size
        for i, ids in enumerate(tokens):
            if not ids:
                raise RequestError(f"input {i} is empty", param=f"input[{i}]")
            if len(ids) > context and request.truncate:
                cut_to_context(ids, context, closing_tokens(model.tokenizer))
            elif len(ids) > context:
                raise ContextLengthError(
                    f"input {i} has {len(ids)} tokens but {request.alias!r} has a context of {context}",
                    param=f"input[{i}]",
                )
            if isinstance(request.inputs[i], tuple) and any(not 0 <= t < vocab for t in ids):
                raise RequestError(
                    f"input {i} has a token id outside the vocabulary (0..{vocab - 1})", param=f"input[{i}]"
                )
        own = model.pooling
        pooling = request.pooling or own.pooling
        normalize = own.normalize if request.normalize is None else request.normalize
        return AdmittedEmbeddings(tokens, pooling, normalize)

    async def count(self, request: GenerationRequest, model: ModelFacts) -> int:
        """The prompt's length in tokens (chat template, tools and images included), unchecked."""
        prompt = request.prompt
        if isinstance(prompt, ChatPrompt) and prompt.images:
            return len((await self._vision(request, prompt, model)).tokens)
        return len(await self._off_loop(encode_prompt, model.tokenizer, prompt))

    async def _vision(self, request: GenerationRequest, prompt: ChatPrompt, model: ModelFacts) -> Any:
        if model.vision is None:
            raise RequestError(
                f"{request.alias!r} is a text model: it does not take images",
                param=prompt.images[0].param,
                hint=model.images_hint,
            )
        return await self._off_loop(vision_prompt, model.tokenizer, model.vision, prompt)

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        # The request's context (its id, for log lines) comes along to the executor.
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor, context.run, fn, *args)

    def close(self) -> None:
        """Stop the executor (queued work is dropped)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
