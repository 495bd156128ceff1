"""A fake ``Engine`` for HTTP tests: scripted tokens, latency and failures, no MLX.

Only the MLX worker is fake. ``EngineCore`` is the runtime's own: residency (the real
rules, over ``FakeBackend``), admission (the real checks, over ``FakeTokenizer``) and the
per-sequence ``Stream``, so a 429, a 503 ``model_loading`` or a 400 ``context_length_exceeded``
seen through HTTP here is the daemon's real answer. Each sequence "decodes" a token every
``token_delay`` seconds: words picked by a hash of the prompt, the choice and the seed,
so equal requests get equal output. ``faults`` scripts failures.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from mlxd.errors import MlxdError, ModelLoadError
from mlxd.output.events import TokenInfo
from mlxd.output.parser import ChoiceParser, OutputSpec
from mlxd.runtime.admission import AdmittedEmbeddings
from mlxd.runtime.engine import Engine, GenerationEvent
from mlxd.runtime.engine_core import EngineCore
from mlxd.runtime.pooling import PoolingSpec
from mlxd.runtime.requests import ChatPrompt, GenerationRequest
from mlxd.runtime.specs import ModelSpec, RuntimeSettings, UnitKey
from mlxd.runtime.streams import Stream
from mlxd.runtime.units import LoadPlan, Unit

#: What the fake model says: every token is one of these words and a space.
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
VOCAB = 1000
#: The width of the fake model's embeddings.
EMBEDDING_SIZE = 64
#: The token an image takes in a fake vision model's prompt (it takes one per image).
IMAGE_TOKEN = 3


class FakeTokenizer:
    """Whitespace words as tokens: enough of a tokenizer for the real admission checks."""

    has_chat_template = True
    has_tool_calling = False
    tool_parser = None
    has_thinking = False

    def encode(self, text: str) -> list[int]:
        return [_word_id(word) for word in text.split()]

    def apply_chat_template(self, messages: list[dict[str, Any]], tokenize: bool = True, **_: Any) -> Any:
        if not tokenize:  # text for an image processor: "<image>" marks each image part
            return " ".join(_text(m.get("content")) for m in messages)
        tokens: list[int] = []
        for message in messages:
            tokens += [1, *self.encode(_text(message.get("content"))), 2]
        return [*tokens, 3]

    def decode(self, tokens: list[int]) -> str:
        return " ".join(WORDS[t % len(WORDS)] for t in tokens)


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(p.get("text", "") if p.get("type") == "text" else "<image>" for p in content)
    return str(content or "")


@dataclass(frozen=True)
class FakeVisionPrompt:
    """What a fake vision model's ``prepare`` gives the worker: the tokens and the cache key."""

    tokens: list[int]
    cache_key: list[int]
    digests: list[str]


class FakeVision:
    """A fake image processor: one ``IMAGE_TOKEN`` per image (the pixels must decode)."""

    def prepare(
        self, tokenizer: FakeTokenizer, text: str, images: list[Any], digests: list[str]
    ) -> FakeVisionPrompt:
        if text.count("<image>") != len(images):
            raise ValueError("one image part per image")
        tokens = [IMAGE_TOKEN if word == "<image>" else _word_id(word) for word in text.split()]
        ids = iter(digests)
        key = [-int(next(ids)[:8], 16) if t == IMAGE_TOKEN else t for t in tokens]
        return FakeVisionPrompt(tokens, key, list(digests))


def _word_id(word: str) -> int:
    return 4 + int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest()) % (VOCAB - 4)


@dataclass
class FakeModel:
    """A "loaded" fake model: what residency and admission read of a model."""

    memory_bytes: int
    context_length: int
    vocab_size: int = VOCAB
    tokenizer: FakeTokenizer = field(default_factory=FakeTokenizer)
    pooling: PoolingSpec = field(default_factory=PoolingSpec)
    #: Sources with "vision" in their name take images.
    vision: FakeVision | None = None
    #: What an image for a text-only model is told to do (``None``: nothing to install).
    images_hint: str | None = None
    #: False for an encoder embedding model (it only embeds).
    generates: bool = True


@dataclass
class Faults:
    """Failures to script; tests set them on ``FakeEngine.faults`` at any time."""

    #: A sequence ends with an error event after this many tokens.
    error_after: int | None = None
    #: Every ``generate`` raises this (e.g. ``CapacityError``, ``UnavailableError``).
    refuse: MlxdError | None = None
    #: The worker is dead: ``healthy()`` is False.
    dead: bool = False
    #: Loads of these sources fail (a corrupt model).
    broken_sources: set[str] = field(default_factory=set)


class FakeBackend:
    """Residency's backend without a worker: loads take ``load_delay`` and cost ``sizes``."""

    def __init__(self, sizes: Mapping[str, int], context_length: int, faults: Faults) -> None:
        self.sizes = sizes
        self.context_length = context_length
        self.faults = faults
        self.load_delay = 0.0
        #: When set, loads wait for it (a test decides when they finish).
        self.hold: asyncio.Event | None = None
        #: Every load and unload, in order: ("load" | "unload", source).
        self.calls: list[tuple[str, str]] = []

    async def prepare(self, spec: ModelSpec, shares_base: bool) -> LoadPlan:
        return LoadPlan(self.sizes.get(spec.source, 2**20))

    async def load(self, key: UnitKey, spec: ModelSpec, plan: LoadPlan) -> FakeModel:
        self.calls.append(("load", spec.source))
        await asyncio.sleep(self.load_delay)
        if self.hold is not None:
            await self.hold.wait()
        if spec.source in self.faults.broken_sources:
            raise ModelLoadError(f"could not load {spec.label or spec.source}: scripted failure")
        vision = FakeVision() if "vision" in spec.source else None
        return FakeModel(plan.estimate_bytes, spec.context_length or self.context_length, vision=vision)

    async def unload(self, key: UnitKey) -> bool:
        self.calls.append(("unload", key[0]))
        return True


class FakeEngine(EngineCore[FakeModel]):
    """The ``Engine`` the HTTP tests run against."""

    def __init__(
        self,
        settings: RuntimeSettings | None = None,
        *,
        sizes: Mapping[str, int] | None = None,
        context_length: int = 2048,
        token_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.faults = Faults()
        self.backend = FakeBackend(sizes or {}, context_length, self.faults)
        super().__init__(settings or RuntimeSettings(), self.backend, clock)
        self.token_delay = token_delay
        self._producers: dict[int, asyncio.Task[None]] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for task in self._producers.values():
            task.cancel()
        await self.close()

    def healthy(self) -> bool:
        return not self.faults.dead

    def cancel(self, seq_id: int) -> None:
        task = self._producers.pop(seq_id, None)
        if task is not None:
            task.cancel()

    async def generate(self, request: GenerationRequest) -> Sequence[Stream]:
        if self.faults.refuse is not None:
            raise self.faults.refuse
        unit, admitted = await self.admit(request)
        streams = self.streams(unit, admitted, request.n)
        for choice, stream in enumerate(streams):
            words = _script(admitted.tokens, (request.sampling.seed or 0) + choice, admitted.max_tokens)
            self._producers[stream.seq_id] = asyncio.create_task(self._produce(stream, request, words))
        self.stats.largest_batch = max(self.stats.largest_batch, len(self._producers))
        return streams

    async def run_embeddings(
        self, unit: Unit[FakeModel], admitted: AdmittedEmbeddings, request_id: str
    ) -> npt.NDArray[np.float32]:
        """A vector per input, a function of its tokens and the pooling only."""
        if self.faults.refuse is not None:
            raise self.faults.refuse
        rows = []
        for tokens in admitted.tokens:
            seed = int.from_bytes(
                hashlib.blake2b(repr((tokens, admitted.pooling)).encode(), digest_size=4).digest()
            )
            row = np.random.default_rng(seed).standard_normal(EMBEDDING_SIZE).astype(np.float32)
            rows.append(row / np.linalg.norm(row) if admitted.normalize else row)
        await asyncio.sleep(self.token_delay)
        return np.stack(rows)

    async def _produce(self, stream: Stream, request: GenerationRequest, words: list[str]) -> None:
        """What the worker does for one sequence: a token per step through the same output
        parser (stop strings cut), output held for ``delivery_interval`` (all of it, when
        ``None``)."""
        offered = request.prompt.tools if isinstance(request.prompt, ChatPrompt) else None
        parser = ChoiceParser(OutputSpec(request.stop, offered, request.max_tool_calls))
        held: list[GenerationEvent] = []
        try:
            for count, word in enumerate(words, start=1):
                await asyncio.sleep(self.token_delay)
                self.stats.steps += 1
                if self.faults.error_after is not None and count > self.faults.error_after:
                    delivery = GenerationEvent.failure("generation failed: scripted failure", count)
                else:
                    tokens = _token(word, request.logprobs) if request.logprobs is not None else None
                    events = parser.feed(word + " ", tokens)
                    if parser.done:
                        events += parser.finish("stop", count)
                    elif count == len(words):
                        events += parser.finish("length", count)
                    delivery = GenerationEvent(events, count)
                if request.delivery_interval is None and delivery.finish is None:
                    held.append(delivery)
                    continue
                for pending in [*held, delivery]:
                    stream.put(pending)
                held = []
                if delivery.finish is not None:
                    return
        finally:
            self._producers.pop(stream.seq_id, None)


def _script(prompt: list[int], seed: int, count: int) -> list[str]:
    """The words a sequence generates: a function of its prompt and seed only."""
    digest = hashlib.blake2b(repr((prompt, seed)).encode(), digest_size=8).digest()
    start = int.from_bytes(digest)
    return [WORDS[(start + i * i) % len(WORDS)] for i in range(count)]


def _token(word: str, top: int) -> list[TokenInfo]:
    raw = (word + " ").encode()
    alternatives = [(_word_id(w), w + " ", (w + " ").encode(), -1.0 - i) for i, w in enumerate(WORDS[:top])]
    return [TokenInfo(_word_id(word), word + " ", raw, -0.5, alternatives)]


def _conforms(engine: FakeEngine) -> Engine:
    """mypy checks here that the fake implements the whole ``Engine`` protocol."""
    return engine
