"""The one MLX worker thread: loads, prefill and decode for every model, batched.

MLX is not thread-safe and its streams are thread-local, so every MLX call happens
here. The asyncio side sends commands through a thread-safe queue; the worker answers
with one ``call_soon_threadsafe`` per decode step carrying the events of every sequence
whose output is due (not one hop per token; a stream's output waits out its delivery
interval, a non-streaming request's until it ends), and resolves
``concurrent.futures.Future``s for loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import gc
import logging
import queue
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import KVCache, make_prompt_cache

from mlxd.errors import MlxdError, ModelLoadError
from mlxd.output.stops import StopMatcher
from mlxd.runtime.engine import GenerationEvent
from mlxd.runtime.mlx.commands import Call, Cancel, Choice, Command, Insert, Key, Load, Shutdown, Sink, Unload
from mlxd.runtime.mlx.constrained import GrammarCache, make_constraint
from mlxd.runtime.mlx.loading import LoadedModel, load_adapted, load_base
from mlxd.runtime.mlx.prompt_cache import MIN_REUSE, PromptCache
from mlxd.runtime.mlx.sampling import make_processors, make_sampler
from mlxd.runtime.mlx.sequence import Sequence
from mlxd.runtime.mlx.solo import SoloDecoder, private_cache
from mlxd.runtime.token_pieces import TokenPieces

log = logging.getLogger("mlxd.runtime")


@dataclass(slots=True)
class _Solo:
    """The one sequence a runner decodes outside its batch (see ``solo.py``)."""

    decoder: SoloDecoder
    seq: Sequence


@dataclass(slots=True)
class _Runner:
    loaded: LoadedModel
    generator: Any
    base_key: tuple[str, str | None]
    prompt_cache: PromptCache
    by_uid: dict[int, Sequence] = field(default_factory=dict)
    solo: _Solo | None = None
    pieces: TokenPieces = field(init=False)
    #: The tokenizer's end-of-sequence ids.
    eos: frozenset[int] = field(init=False)
    #: Whether a lone sequence may decode outside the batch (the model's caches are plain
    #: KV caches; sliding-window and recurrent layers always go through the batch).
    solo_ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.pieces = TokenPieces(self.loaded.tokenizer)
        self.eos = frozenset(self.loaded.tokenizer.eos_token_ids)
        self.solo_ok = all(type(layer) is KVCache for layer in make_prompt_cache(self.loaded.model))

    def sequences(self) -> list[Sequence]:
        """Every sequence of this model, in the batch or alone."""
        return [*self.by_uid.values(), *([self.solo.seq] if self.solo is not None else [])]


def _settle_heap() -> None:
    """Put every object alive now out of the cyclic garbage collector's way.

    The daemon holds over 100,000 long-lived objects (the web stack, transformers, the
    tokenizers and models): a full collection walked them all (50-75 ms on the tiny
    model's daemon, several times during the first load). Frozen objects are still freed
    by reference counting, which is how an unloaded model's arrays go (they form no
    cycles), and collections only look at what was created since.
    """
    gc.freeze()


def _release_memory() -> None:
    """Return freed weights to the OS (glibc keeps them otherwise; macOS needs no help)."""
    gc.collect()
    mx.clear_cache()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


class MlxWorker:
    """Owns the MLX thread, the loaded models and their continuous batches."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        commands: queue.SimpleQueue[Command],
        *,
        max_batch_size: int,
        prefill_step_size: int,
        prompt_cache_bytes: int,
        on_crash: Callable[[BaseException], None],
    ) -> None:
        self.max_batch_size = max_batch_size
        self.prefill_step_size = prefill_step_size
        self.prompt_cache_bytes = prompt_cache_bytes
        self.alive = True
        self.steps = 0
        self.largest_batch = 0
        self.prompt_tokens_processed = 0
        #: (MLX active bytes, MLX buffer-cache bytes, prompt-cache bytes, prompt-cache entries),
        #: refreshed on the worker thread whenever it goes idle.
        self.memory: tuple[int, int, int, int] = (0, 0, 0, 0)
        self._loop = loop
        self._on_crash = on_crash
        self._commands = commands
        self._pending: list[Command] = []  # taken from the queue, not handled yet
        self._runners: dict[Key, _Runner] = {}
        self._bases: dict[tuple[str, str | None], LoadedModel] = {}
        self._sequences: dict[int, tuple[_Runner, Sequence]] = {}
        self.grammars = GrammarCache()

    def run(self) -> None:
        """Serve commands on the calling thread (the worker thread) until shut down."""
        _settle_heap()
        self._main()

    # --- the thread -----------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # the worker itself failed: report it, fail everyone
            log.exception("the MLX worker crashed")
            self.alive = False
            failed = GenerationEvent(finish_reason="error", error="the engine failed")
            events = [(seq.sink, failed) for _, seq in self._sequences.values()]
            self._sequences.clear()
            # Nothing still queued may wait forever: fail it too.
            for command in [*self._pending, *self._drain(block=False)]:
                if isinstance(command, Insert):
                    events.extend((choice.sink, failed) for choice in command.choices)
                elif isinstance(command, Load | Unload | Call) and not command.future.done():
                    command.future.set_exception(ModelLoadError("the engine restarted; try again"))
            if events:
                self._loop.call_soon_threadsafe(_deliver, events)
            self._loop.call_soon_threadsafe(self._on_crash, exc)
        finally:
            self._runners.clear()
            self._bases.clear()
            # Without this the process can abort at exit (thread-local streams).
            with contextlib.suppress(Exception):
                mx.clear_streams()

    def _serve(self) -> None:
        while True:
            busy = bool(self._sequences)
            if not busy:
                self._measure()
            self._pending = self._drain(block=not busy)
            while self._pending:
                command = self._pending.pop(0)
                if isinstance(command, Shutdown):
                    return
                self._handle(command)
            if not self._sequences:
                continue
            out: list[tuple[Sink, GenerationEvent]] = []
            for runner in list(self._runners.values()):
                if runner.solo is not None:
                    if runner.by_uid:  # company arrived: the lone sequence joins the batch
                        self._join_batch(runner, runner.solo, out)
                    else:
                        self._step_solo(runner, runner.solo, out)
                if runner.by_uid:
                    self._step(runner, out)
            if out:
                self._loop.call_soon_threadsafe(_deliver, out)

    def _measure(self) -> None:
        caches = [runner.prompt_cache for runner in self._runners.values()]
        self.memory = (
            mx.get_active_memory(),
            mx.get_cache_memory(),
            sum(cache.bytes for cache in caches),
            sum(len(cache) for cache in caches),
        )

    def _drain(self, *, block: bool) -> list[Command]:
        commands: list[Command] = []
        if block:
            # Wake up now and then while idle to refresh the memory figures.
            try:
                commands.append(self._commands.get(timeout=1.0))
            except queue.Empty:
                return commands
        while True:
            try:
                commands.append(self._commands.get_nowait())
            except queue.Empty:
                return commands

    def _handle(self, command: Command) -> None:
        if isinstance(command, Insert):
            self._insert(command)
        elif isinstance(command, Cancel):
            self._cancel(command.seq_id)
        elif isinstance(command, Load):
            _settle(command.future, lambda: self._load(command))
        elif isinstance(command, Unload):
            _settle(command.future, lambda: self._unload(command.key))
        elif isinstance(command, Call):
            _settle(command.future, command.fn)

    def _load(self, command: Load) -> LoadedModel:
        if command.key in self._runners:
            return self._runners[command.key].loaded
        spec = command.spec
        base = self._bases.get(spec.base_key)
        if base is None:
            base = load_base(command.path, spec.context_length)
            self._bases[spec.base_key] = base
        loaded = base
        if spec.adapter_path is not None:
            try:
                loaded = load_adapted(base, command.path, spec.adapter_path)
            except ModelLoadError:
                if not any(r.base_key == spec.base_key for r in self._runners.values()):
                    del self._bases[spec.base_key]
                raise
        eos = [[t] for t in sorted(loaded.tokenizer.eos_token_ids)]
        generator = BatchGenerator(
            loaded.model,
            stop_tokens=eos,
            completion_batch_size=self.max_batch_size,
            prefill_batch_size=min(8, self.max_batch_size),
            prefill_step_size=self.prefill_step_size,
        )
        self._runners[command.key] = _Runner(
            loaded, generator, spec.base_key, PromptCache(self.prompt_cache_bytes)
        )
        _settle_heap()
        return loaded

    def _unload(self, key: Key) -> bool:
        runner = self._runners.pop(key, None)
        if runner is None:
            return False
        events = []
        for seq in runner.sequences():
            self._sequences.pop(seq.seq_id, None)
            events.append((seq.sink, GenerationEvent(finish_reason="error", error="the model was unloaded")))
        if events:
            self._loop.call_soon_threadsafe(_deliver, events)
        runner.generator.close()
        if not any(r.base_key == runner.base_key for r in self._runners.values()):
            self._bases.pop(runner.base_key, None)
        del runner
        _release_memory()
        return True

    def _insert(self, command: Insert) -> None:
        runner = self._runners.get(command.key)
        if runner is None:
            self._fail(command, "the model is not loaded")
            return
        tokens = command.tokens
        count = len(command.choices)
        cache, hit = runner.prompt_cache.lookup(tokens)
        reused = hit
        if self._start_solo(runner, command, cache, hit):
            return
        try:
            if count > 1 and len(tokens) > 1:
                cache, reused = self._prefill_once(runner, tokens, cache, hit)
            self.prompt_tokens_processed += (reused - hit) + count * (len(tokens) - reused)
            uids = runner.generator.insert(
                [list(tokens[reused:]) for _ in range(count)],
                max_tokens=[command.max_tokens] * count,
                caches=[[copy.copy(layer) for layer in cache] for _ in range(count)] if cache else None,
                all_tokens=[list(tokens[:reused]) for _ in range(count)] if cache else None,
                samplers=[make_sampler(choice.sampling) for choice in command.choices],
                logits_processors=[
                    self._processors(runner, choice, command.grammar) for choice in command.choices
                ],
            )
        except Exception as exc:
            log.exception("could not start a sequence")
            self._fail(command, str(exc))
            return
        for uid, choice in zip(uids, command.choices, strict=True):
            runner.by_uid[uid] = self._new_sequence(runner, command, choice, uid, hit)

    def _new_sequence(self, runner: _Runner, command: Insert, choice: Choice, uid: int, hit: int) -> Sequence:
        seq = Sequence(
            seq_id=choice.seq_id,
            uid=uid,
            sink=choice.sink,
            detokenizer=runner.loaded.tokenizer.detokenizer,
            stops=StopMatcher(command.stop),
            eos=runner.eos,
            logprobs=command.logprobs,
            pieces=runner.pieces,
            interval=command.interval,
        )
        self._sequences[choice.seq_id] = (runner, seq)
        # A plain int written before any event of this sequence is delivered to the loop.
        choice.sink.cached_tokens = hit
        return seq

    def _start_solo(self, runner: _Runner, command: Insert, cache: list[Any] | None, hit: int) -> bool:
        """Decode a request alone, outside the batch, when it is the model's only one.

        False (the batch takes it) when other sequences run, for ``n`` > 1, and when the
        model's or the prompt cache's layers are not plain KV caches.
        """
        alone = runner.solo is None and not runner.by_uid
        if not (alone and runner.solo_ok and len(command.choices) == 1):
            return False
        model = runner.loaded.model
        layers = private_cache(cache, hit) if cache is not None else make_prompt_cache(model)
        if layers is None:
            return False
        choice = command.choices[0]
        tokens = command.tokens
        try:
            decoder = SoloDecoder(
                model,
                tokens[hit:],
                layers,
                tokens[:hit],
                sampler=make_sampler(choice.sampling),
                processors=self._processors(runner, choice, command.grammar),
                max_tokens=command.max_tokens,
                stop_tokens=runner.eos,
                prefill_step_size=self.prefill_step_size,
                stream=runner.generator.stream,
            )
        except Exception as exc:
            log.exception("could not start a sequence")
            self._fail(command, str(exc))
            return True
        self.prompt_tokens_processed += len(tokens) - hit
        runner.solo = _Solo(decoder, self._new_sequence(runner, command, choice, -1, hit))
        return True

    def _step_solo(self, runner: _Runner, solo: _Solo, out: list[tuple[Sink, GenerationEvent]]) -> None:
        try:
            response = solo.decoder.step()
        except Exception as exc:  # this sequence's failure is its alone; the model stays
            log.exception("a decode step failed")
            response = None
            self._end_solo(runner, solo, store=False)
            out.append(
                (solo.seq.sink, GenerationEvent(finish_reason="error", error=f"generation failed: {exc}"))
            )
        if response is None:
            return
        self.steps += 1
        self.largest_batch = max(self.largest_batch, 1)
        if self._emit(solo.seq, response, time.monotonic(), out):
            self._end_solo(runner, solo, store=True)

    def _join_batch(self, runner: _Runner, solo: _Solo, out: list[tuple[Sink, GenerationEvent]]) -> None:
        """Move the lone sequence into the batch, delivering the token it had in flight."""
        decoder, seq = solo.decoder, solo.seq
        try:
            response, state = decoder.detach()
            if response is not None and self._emit(seq, response, time.monotonic(), out):
                self._end_solo(runner, solo, store=True)
                return
            if state is None:  # cannot happen: a token that ends the sequence is emitted as final
                raise RuntimeError("the sequence ended without a final event")
            (uid,) = runner.generator.insert(
                [state.prompt],
                max_tokens=[state.max_tokens],
                caches=[state.cache],
                all_tokens=[state.all_tokens],
                samplers=[decoder.sampler],
                logits_processors=[decoder.processors],
            )
        except Exception as exc:
            log.exception("a sequence could not join the batch")
            self._end_solo(runner, solo, store=False)
            out.append((seq.sink, GenerationEvent(finish_reason="error", error=f"generation failed: {exc}")))
            return
        runner.solo = None
        seq.uid = uid
        runner.by_uid[uid] = seq

    def _end_solo(self, runner: _Runner, solo: _Solo, *, store: bool) -> None:
        runner.solo = None
        self._sequences.pop(solo.seq.seq_id, None)
        if store:
            tokens, layers = solo.decoder.cache_state()
            runner.prompt_cache.store(list(tokens), layers, min_tokens=MIN_REUSE)

    def _processors(self, runner: _Runner, choice: Choice, grammar: str | None) -> list[Any]:
        processors = make_processors(choice.sampling)
        if grammar is not None:
            loaded = runner.loaded
            processors.append(make_constraint(loaded.tokenizer, grammar, loaded.vocab_size, self.grammars))
        return processors

    def _prefill_once(
        self, runner: _Runner, tokens: list[int], cache: list[Any] | None, hit: int
    ) -> tuple[list[Any], int]:
        """Run the prompt (all but its last token) through the model once, for every choice."""
        model = runner.loaded.model
        # The cache is extended in place below: never touch a prompt-cache entry's arrays.
        layers = copy.deepcopy(cache) if cache is not None else make_prompt_cache(model)
        rest = tokens[hit:-1]
        for start in range(0, len(rest), self.prefill_step_size):
            model(mx.array(rest[start : start + self.prefill_step_size])[None], cache=layers)
            mx.eval([layer.state for layer in layers])
        return layers, len(tokens) - 1

    def _fail(self, command: Insert, error: str) -> None:
        events = [(c.sink, GenerationEvent(finish_reason="error", error=error)) for c in command.choices]
        self._loop.call_soon_threadsafe(_deliver, events)

    def _cancel(self, seq_id: int) -> None:
        found = self._sequences.pop(seq_id, None)
        if found is None:
            return
        runner, seq = found
        if runner.solo is not None and runner.solo.seq is seq:
            runner.solo = None
            return
        runner.by_uid.pop(seq.uid, None)
        runner.generator.remove([seq.uid])

    def _step(self, runner: _Runner, out: list[tuple[Sink, GenerationEvent]]) -> None:
        try:
            _, responses = runner.generator.next()
        except Exception as exc:  # the batch itself failed: fail its sequences, keep the model
            log.exception("a decode step failed")
            for seq in runner.by_uid.values():
                self._sequences.pop(seq.seq_id, None)
                out.append(
                    (
                        seq.sink,
                        GenerationEvent(finish_reason="error", error=f"generation failed: {exc}"),
                    )
                )
            for uid in list(runner.by_uid):
                with contextlib.suppress(Exception):
                    runner.generator.remove([uid])
            runner.by_uid.clear()
            return
        if responses:
            self.steps += 1
            self.largest_batch = max(self.largest_batch, len(responses))
        now = time.monotonic()
        leaving: list[int] = []
        for response in responses:
            found = runner.by_uid.get(response.uid)
            if found is None or not self._emit(found, response, now, out):
                continue
            del runner.by_uid[response.uid]
            self._sequences.pop(found.seq_id, None)
            if response.finish_reason is None:
                leaving.append(response.uid)
            elif response.prompt_cache is not None:
                runner.prompt_cache.store(response.all_tokens, response.prompt_cache)
        if leaving:
            caches = runner.generator.remove(leaving, return_prompt_caches=runner.prompt_cache.max_bytes > 0)
            for layers, tokens in caches.values():
                runner.prompt_cache.store(list(tokens), layers)

    @staticmethod
    def _emit(seq: Sequence, response: Any, now: float, out: list[tuple[Sink, GenerationEvent]]) -> bool:
        """Turn one generated token into output, delivered or held; True when the sequence ended."""
        event = seq.output(response, now)
        if event is None:
            return False
        out.append((seq.sink, event))
        return event.finish_reason is not None


def _settle(future: Future[Any], fn: Callable[[], Any]) -> None:
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


def _deliver(events: list[tuple[Sink, GenerationEvent]]) -> None:
    for sink, event in events:
        sink.put(event)
