"""The asyncio side of the runtime: model residency, admission, and request streams.

``MlxEngine`` implements the ``Engine`` interface. It decides which model units are
loaded (single-flight loads, LRU eviction of idle units under ``max_loaded_models`` and
the memory budget, ``keep_alive`` expiry), admits sequences into the worker's batches
under ``max_batch_size + max_queue``, tokenizes off the MLX thread, and turns the
worker's events into per-request async iterators.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlxd.errors import (
    CapacityError,
    ContextLengthError,
    ModelLoadError,
    RequestError,
    UnavailableError,
)
from mlxd.output.reasoning import ReasoningFormat
from mlxd.output.tool_calls import ToolFormat
from mlxd.runtime.engine import (
    ChatPrompt,
    Constraint,
    EngineStatus,
    GenerationEvent,
    GenerationRequest,
    LoadedModelStatus,
    ModelSpec,
    TextPrompt,
)
from mlxd.runtime.mlx.commands import Cancel, Choice, Insert, Key, Load, Unload, WorkerHandle
from mlxd.runtime.prompts import encode_prompt

if TYPE_CHECKING:
    from mlxd.runtime.mlx.loading import LoadedModel

log = logging.getLogger("mlxd.runtime")


@dataclass(slots=True)
class RuntimeLimits:
    """The ``[runtime]`` settings the engine enforces (memory budget already in bytes)."""

    max_loaded_models: int = 2
    memory_budget_bytes: int = 2**40
    max_batch_size: int = 16
    max_queue: int = 64
    prefill_step_size: int = 256
    prompt_cache_bytes: int = 2 * 10**9


@dataclass(slots=True)
class _Unit:
    key: Key
    spec: ModelSpec
    aliases: set[str]
    keep_alive: float
    loading: asyncio.Future[LoadedModel] | None = None
    loaded: LoadedModel | None = None
    active: int = 0
    last_used: float = field(default_factory=time.monotonic)
    estimate_bytes: int = 0


class _Stream:
    """One admitted sequence: the worker puts events in, the HTTP layer iterates them.

    Iterating yields every event that is ready at once, so a client that fell behind
    catches up in one write instead of one per token.
    """

    __slots__ = (
        "_buffer",
        "_done",
        "_engine",
        "_loop",
        "_unit",
        "_waiter",
        "cached_tokens",
        "prompt_tokens",
        "reasoning_format",
        "seq_id",
        "tool_format",
    )

    def __init__(self, engine: MlxEngine, unit: _Unit, seq_id: int, prompt_tokens: int) -> None:
        self._engine = engine
        self._unit = unit
        self._buffer: list[GenerationEvent] = []
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()  # looked up once: it costs a syscall
        self._done = False
        self.seq_id = seq_id
        self.prompt_tokens = prompt_tokens
        self.cached_tokens = 0
        self.tool_format: ToolFormat | None = None
        self.reasoning_format: ReasoningFormat | None = None

    def put(self, event: GenerationEvent) -> None:
        """Called on the event loop by the worker's per-step delivery."""
        if self._done:
            return
        self._buffer.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def __aiter__(self) -> AsyncIterator[list[GenerationEvent]]:
        try:
            while True:
                if not self._buffer:
                    self._waiter = self._loop.create_future()
                    await self._waiter
                    self._waiter = None
                events, self._buffer = self._buffer, []
                final = events[-1].finish_reason is not None
                if final:
                    self._finish()
                yield events
                if final:
                    return
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Free the sequence's slot now (the client left or stopped reading)."""
        if not self._done:
            self._engine.worker_submit(Cancel(self.seq_id))
            self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._engine.release(self._unit)


class MlxEngine:
    """The runtime behind the HTTP layer, backed by one ``MlxWorker`` thread."""

    def __init__(
        self,
        limits: RuntimeLimits,
        resolve_path: Callable[[ModelSpec], Path],
        estimate_bytes: Callable[[Path], int] | None = None,
    ) -> None:
        self.limits = limits
        self._resolve_path = resolve_path
        self._estimate = estimate_bytes or _safetensors_bytes
        self._units: dict[Key, _Unit] = {}
        self._seq_ids = itertools.count(1)
        self._tokenize = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlxd-tokenize")
        self._worker: WorkerHandle | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._loading: set[asyncio.Task[None]] = set()
        self.loads = 0

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker thread and the idle-model reaper."""
        self._start_worker()
        self._reaper = asyncio.create_task(self._reap_idle(), name="mlxd-reaper")

    async def stop(self) -> None:
        """Stop the reaper and the worker thread."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._worker is not None:
            await asyncio.to_thread(self._worker.stop)
        self._tokenize.shutdown(wait=False, cancel_futures=True)

    def _start_worker(self) -> None:
        loop = asyncio.get_running_loop()
        self._worker = WorkerHandle(
            loop,
            max_batch_size=self.limits.max_batch_size,
            prefill_step_size=self.limits.prefill_step_size,
            prompt_cache_bytes=self.limits.prompt_cache_bytes,
            on_crash=self._worker_crashed,
        )
        self._worker.start()

    def _worker_crashed(self, exc: BaseException) -> None:
        log.error("restarting the MLX worker after a crash: %s", exc)
        self._units.clear()
        self._start_worker()

    def healthy(self) -> bool:
        """True while the worker thread runs."""
        return self._worker is not None and self._worker.alive

    def worker_submit(self, command: Any) -> None:
        """Hand a command to the worker thread."""
        if self._worker is not None:
            self._worker.submit(command)

    # --- requests -------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> list[_Stream]:
        """Admit a request's choices: load the model if needed, tokenize, check limits, enqueue."""
        count = request.n
        unit = await self._acquire(request.alias, request.spec, request.keep_alive, count)
        try:
            loaded = await self._wait_loaded(unit)
            capacity = self.limits.max_batch_size + self.limits.max_queue
            if unit.active > capacity:
                raise CapacityError(
                    f"too many requests for {request.alias!r}: {capacity} running or waiting",
                    retry_after=max(1, math.ceil(unit.active / max(1, self.limits.max_batch_size))),
                )
            tokens = await asyncio.get_running_loop().run_in_executor(
                self._tokenize, encode_prompt, loaded.tokenizer, request.prompt
            )
            max_tokens = self._check(request, loaded, tokens)
            tool_format = _tool_format(request, loaded)
            reasoning = _reasoning_format(request, loaded, tokens)
            grammar = None
            if request.constraint is not None:
                grammar = await asyncio.get_running_loop().run_in_executor(
                    self._tokenize, _grammar, request.constraint, tool_format
                )
        except BaseException:
            for _ in range(count):
                self.release(unit)
            raise
        streams = [_Stream(self, unit, next(self._seq_ids), len(tokens)) for _ in range(count)]
        for stream in streams:
            stream.tool_format = tool_format
            stream.reasoning_format = reasoning
        seed = request.sampling.seed
        choices = [
            Choice(
                stream.seq_id,
                request.sampling if seed is None or i == 0 else replace(request.sampling, seed=seed + i),
                stream,
            )
            for i, stream in enumerate(streams)
        ]
        self.worker_submit(
            Insert(
                unit.key,
                tokens,
                max_tokens,
                request.stop,
                request.logprobs,
                choices,
                grammar,
                interval=request.delivery_interval,
            )
        )
        return streams

    @staticmethod
    def _check(request: GenerationRequest, loaded: LoadedModel, tokens: list[int]) -> int:
        if not tokens:
            raise RequestError("the prompt is empty", param="prompt")
        context = loaded.context_length
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
        for token_id, _ in request.sampling.logit_bias:
            if not 0 <= token_id < loaded.vocab_size:
                raise RequestError(
                    f"logit_bias token {token_id} is outside the vocabulary (0..{loaded.vocab_size - 1})",
                    param="logit_bias",
                )
        if request.sampling.top_k > loaded.vocab_size:
            raise RequestError(f"top_k exceeds the vocabulary size ({loaded.vocab_size})", param="top_k")
        tokens_given = request.prompt.tokens if isinstance(request.prompt, TextPrompt) else None
        if tokens_given is not None and any(not 0 <= t < loaded.vocab_size for t in tokens_given):
            raise RequestError("a prompt token id is outside the vocabulary", param="prompt")
        return min(request.max_tokens, room)

    def release(self, unit: _Unit) -> None:
        """A sequence ended: the unit is one request less busy."""
        unit.active = max(0, unit.active - 1)
        unit.last_used = time.monotonic()
        if unit.active == 0 and unit.keep_alive <= 0 and unit.loaded is not None:
            asyncio.get_running_loop().create_task(self._unload_unit(unit))

    # --- residency ------------------------------------------------------------------

    async def _acquire(self, alias: str, spec: ModelSpec, keep_alive: float, count: int = 1) -> _Unit:
        """The unit for ``spec``, counted ``count`` times busier; starts a load (once) if it is cold."""
        unit = self._units.get(spec.key)
        if unit is None:
            unit = _Unit(spec.key, spec, {alias}, keep_alive)
            self._units[spec.key] = unit
            unit.loading = asyncio.get_running_loop().create_future()
            task = asyncio.get_running_loop().create_task(self._load(unit))
            self._loading.add(task)  # keep a reference until it finishes
            task.add_done_callback(self._loading.discard)
        else:
            unit.aliases.add(alias)
            unit.keep_alive = keep_alive
        unit.active += count
        return unit

    async def _wait_loaded(self, unit: _Unit) -> LoadedModel:
        if unit.loaded is not None:
            return unit.loaded
        assert unit.loading is not None
        return await asyncio.shield(unit.loading)

    async def _load(self, unit: _Unit) -> None:
        assert unit.loading is not None
        try:
            path = await asyncio.to_thread(self._resolve_path, unit.spec)
            shares_base = any(
                u is not unit and u.spec.base_key == unit.spec.base_key for u in self._units.values()
            )
            weights = unit.spec.adapter_path if shares_base and unit.spec.adapter_path else path
            unit.estimate_bytes = await asyncio.to_thread(self._estimate, weights)
            await self._make_room(unit)
            future: Future[LoadedModel] = Future()
            self.worker_submit(Load(unit.key, unit.spec, path, future))
            self.loads += 1
            loaded = await asyncio.wrap_future(future)
        except BaseException as exc:
            if self._units.get(unit.key) is unit:
                del self._units[unit.key]
            unit.loading.set_exception(exc)
            unit.loading.exception()  # waiters re-raise it; do not warn when there are none
            return
        unit.loaded = loaded
        unit.loading.set_result(loaded)
        log.info("loaded %s (%s MB)", ", ".join(sorted(unit.aliases)), loaded.memory_bytes // 2**20)

    async def _make_room(self, incoming: _Unit) -> None:
        """Unload idle units (least recently used first) until the new one fits."""
        budget = self.limits.memory_budget_bytes
        if incoming.estimate_bytes > budget:
            raise ModelLoadError(
                f"the model needs about {incoming.estimate_bytes // 2**20} MB but memory_budget "
                f"allows {budget // 2**20} MB"
            )
        while True:
            others = [u for u in self._units.values() if u is not incoming and (u.loaded or u.loading)]
            used = sum(_unit_bytes(u) for u in others)
            if len(others) < self.limits.max_loaded_models and used + incoming.estimate_bytes <= budget:
                return
            idle = sorted(
                (u for u in others if u.active == 0 and u.loaded is not None),
                key=lambda u: u.last_used,
            )
            if not idle:
                raise UnavailableError(
                    "every loaded model is busy and no more fit; try again shortly",
                    code="model_loading",
                    retry_after=2,
                )
            await self._unload_unit(idle[0])

    async def _unload_unit(self, unit: _Unit) -> bool:
        if self._units.get(unit.key) is not unit or unit.active > 0:
            return False
        del self._units[unit.key]
        future: Future[bool] = Future()
        self.worker_submit(Unload(unit.key, future))
        done = await asyncio.wrap_future(future)
        log.info("unloaded %s", ", ".join(sorted(unit.aliases)))
        return done

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for unit in list(self._units.values()):
                if unit.loaded is not None and unit.active == 0 and now - unit.last_used >= unit.keep_alive:
                    await self._unload_unit(unit)

    async def load(self, alias: str, spec: ModelSpec, keep_alive: float) -> None:
        """Load (or keep) the unit behind ``alias`` now."""
        unit = await self._acquire(alias, spec, keep_alive)
        try:
            await self._wait_loaded(unit)
        finally:
            unit.active -= 1
            unit.last_used = time.monotonic()

    async def unload(self, alias: str) -> bool:
        """Unload every idle unit ``alias`` uses; False when none was loaded."""
        units = [u for u in self._units.values() if alias in u.aliases and u.loaded is not None]
        for unit in units:
            if unit.active:
                raise UnavailableError(f"{alias!r} is serving {unit.active} request(s)", retry_after=5)
        return any([await self._unload_unit(u) for u in units])

    def retire_unused(self, keys: set[Key]) -> None:
        """Units no alias uses any more unload once their last request finishes."""
        for unit in list(self._units.values()):
            if unit.key not in keys:
                unit.keep_alive = 0.0
                if unit.active == 0 and unit.loaded is not None:
                    asyncio.get_running_loop().create_task(self._unload_unit(unit))

    def set_limits(self, limits: RuntimeLimits) -> None:
        """Apply new limits; batch size and prefill step take effect for new loads."""
        self.limits = replace(limits)

    def status(self) -> EngineStatus:
        """What is loaded and how busy it is."""
        now = time.monotonic()
        models = [
            LoadedModelStatus(
                alias=", ".join(sorted(u.aliases)),
                source=u.spec.label or u.spec.source,
                state="loaded" if u.loaded else "loading",
                memory_bytes=u.loaded.memory_bytes if u.loaded else 0,
                active_sequences=u.active,
                idle_s=0.0 if u.active else round(now - u.last_used, 1),
            )
            for u in self._units.values()
        ]
        active = sum(u.active for u in self._units.values())
        waiting = sum(max(0, u.active - self.limits.max_batch_size) for u in self._units.values())
        worker = self._worker
        return EngineStatus(
            worker="running" if self.healthy() else "down",
            models=models,
            active_sequences=active,
            queue_depth=waiting,
            batches=worker.stat("steps") if worker else 0,
            largest_batch=worker.stat("largest_batch") if worker else 0,
            loads=self.loads,
            prompt_tokens_processed=worker.stat("prompt_tokens_processed") if worker else 0,
            memory=dict(
                zip(
                    ("mlx_active_bytes", "mlx_cache_bytes", "prompt_cache_bytes", "prompt_cache_entries"),
                    worker.stat("memory", (0, 0, 0, 0)) if worker else (0, 0, 0, 0),
                    strict=True,
                )
            ),
        )


def _tool_format(request: GenerationRequest, loaded: LoadedModel) -> ToolFormat | None:
    """The model's tool-call format when the request offers tools (400 if it has none)."""
    if not isinstance(request.prompt, ChatPrompt) or not request.prompt.tools:
        return None
    tokenizer = loaded.tokenizer
    if not tokenizer.has_tool_calling or tokenizer.tool_parser is None:
        raise RequestError(
            f"{request.alias!r} has no tool-calling format in its chat template", param="tools"
        )
    return ToolFormat(tokenizer.tool_call_start, tokenizer.tool_call_end, tokenizer.tool_parser)


def _grammar(constraint: Constraint, tool_format: ToolFormat | None) -> str:
    """The llguidance grammar for a constraint (compiled once here, so a bad schema is a 400)."""
    from mlxd.runtime.mlx.constrained import json_grammar, tagged_json_grammar  # loads llguidance

    schema = dict(constraint.schema) if constraint.schema is not None else None
    if not constraint.tool_call:
        return json_grammar(schema)
    if tool_format is None or not tool_format.json_between_tags:
        raise RequestError(
            "tool_choice 'required' or a named function needs a model whose tool calls are JSON "
            "between tags (Hermes/Qwen style)",
            param="tool_choice",
        )
    return tagged_json_grammar(tool_format.start + "\n", schema or {}, "\n" + tool_format.end)


def _reasoning_format(
    request: GenerationRequest, loaded: LoadedModel, tokens: list[int]
) -> ReasoningFormat | None:
    """A reasoning model's tags, and whether its template already opened the thinking block."""
    tokenizer = loaded.tokenizer
    if not isinstance(request.prompt, ChatPrompt) or not getattr(tokenizer, "has_thinking", False):
        return None
    start, end = tokenizer.think_start, tokenizer.think_end
    tail = tokenizer.decode(tokens[-8:])
    return ReasoningFormat(start, end, starts_inside=tail.rfind(start) > tail.rfind(end))


def _unit_bytes(unit: _Unit) -> int:
    return unit.loaded.memory_bytes if unit.loaded else unit.estimate_bytes


def _safetensors_bytes(path: Path) -> int:
    """Weights on disk: the best estimate of memory before a load."""
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))
