"""One loaded model unit on the worker thread: its batch, its prompt cache, its solo decoder.

A runner owns mlx-lm's ``BatchGenerator`` for its model. A request that is the model's
only one decodes alone (``solo.py``: no batch machinery) and moves into the batch, token
for token unchanged, when company arrives. Finished sequences leave their KV cache in the
runner's prompt cache. New ``[runtime]`` settings apply before the next step. A prompt
with images whose backend is ``serial`` (Qwen's 3-D positions) runs without company:
requests that arrive meanwhile wait, in order, until it ends.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

from mlx_lm.models.cache import KVCache, make_prompt_cache

from mlxd.logs import tagged
from mlxd.output.parser import ChoiceParser
from mlxd.runtime.mlx import vision
from mlxd.runtime.mlx.batch import Batch, Out, emit, failed
from mlxd.runtime.mlx.commands import Choice, Embed, Insert
from mlxd.runtime.mlx.constrained import GrammarCache, make_constraint
from mlxd.runtime.mlx.embed import DecodeClock, DecoderForward, Embedder, Pacer
from mlxd.runtime.mlx.loading import LoadedModel
from mlxd.runtime.mlx.prompt_cache import MIN_REUSE, PromptCache
from mlxd.runtime.mlx.sampling import make_processors, make_sampler, xtc_special_tokens
from mlxd.runtime.mlx.sequence import Sequence
from mlxd.runtime.mlx.solo import SoloDecoder, prefill, private_cache
from mlxd.runtime.mlx.speculative import DraftStats, SpeculativeDecoder
from mlxd.runtime.mlx.stats import WorkerStats
from mlxd.runtime.mlx.unit_options import UnitOptions
from mlxd.runtime.mlx.warmup import warm_up
from mlxd.runtime.specs import RuntimeSettings
from mlxd.runtime.token_pieces import TokenPieces

log = logging.getLogger("mlxd.runtime")
#: Tokens of one embedding batch while no sequence of the model decodes (nobody waits on
#: its step, so a burst runs in as few batches as this allows).
IDLE_EMBED_TOKENS = 8192


@dataclass(slots=True)
class _Solo:
    """The one sequence decoding outside the batch."""

    decoder: SoloDecoder
    seq: Sequence


class ModelRunner:
    """Inserts, steps and cancels the sequences of one model unit."""

    def __init__(
        self,
        loaded: LoadedModel,
        base_key: tuple[str, str | None],
        settings: RuntimeSettings,
        stats: WorkerStats,
        grammars: GrammarCache,
        options: UnitOptions | None = None,
    ) -> None:
        self.loaded = loaded
        #: The shared base weights this unit uses (see ``WeightStore``).
        self.base_key = base_key
        self._stats = stats
        self._grammars = grammars
        #: KV quantization, draft model, disk prompt cache (``unit_options``).
        self.options = options = options or UnitOptions()
        self.eos = frozenset(loaded.tokenizer.eos_token_ids)
        self.prompt_cache = PromptCache(settings.prompt_cache_bytes, disk=options.disk)
        self.batch = Batch(loaded.model, self.eos, self.prompt_cache, stats, options.kv)
        self._pieces = TokenPieces(loaded.tokenizer)
        self._xtc_special = xtc_special_tokens(loaded.tokenizer)
        #: What this unit's draft model proposed and what was accepted.
        self.draft_stats = DraftStats()
        # Sliding-window and recurrent layers always go through the batch (an encoder only embeds).
        self._solo_ok = loaded.generates and all(
            type(layer) is KVCache for layer in make_prompt_cache(loaded.model)
        )
        self._by_seq: dict[int, Sequence] = {}
        self._solo: _Solo | None = None
        self._embedder: Embedder | None = None
        #: Requests waiting for a serial prompt with images to end (or to start alone).
        self._waiting: list[Insert] = []
        #: True while a serial prompt with images decodes.
        self._alone = False
        self._pacer = Pacer()
        self._prefill_step = settings.prefill_step_size
        self.configure(settings)
        if loaded.generates:
            warm_up(loaded.model, self.batch.generator, loaded.vocab_size)

    @property
    def decoding(self) -> bool:
        """True while any sequence of this model is generating."""
        return bool(self._by_seq)

    @property
    def busy(self) -> bool:
        """True while any sequence of this model is generating or embedding input waits."""
        return bool(self._by_seq) or bool(self._embedder) or bool(self._waiting)

    def embed(self, command: Embed) -> None:
        """Queue a request's embedding inputs: one bounded batch of them runs per step."""
        if self._embedder is None:
            loaded = self.loaded
            self._embedder = Embedder(loaded.encoder or DecoderForward(loaded.model))
        self._embedder.add(command)

    def configure(self, settings: RuntimeSettings) -> None:
        """Apply new ``[runtime]`` settings: batch size and prefill step from the next step
        on, the prompt-cache budget now (a smaller one evicts)."""
        self.batch.configure(settings)
        self._prefill_step = settings.prefill_step_size
        self.prompt_cache.resize(settings.prompt_cache_bytes)

    def insert(self, command: Insert, out: Out) -> None:
        """Start a request's choices: alone when it is the model's only one, else in the batch
        (or later, when a serial prompt with images is in the way)."""
        if not self.loaded.generates:  # admission refuses these: none may reach the batch
            out.extend((choice.sink, failed("this model only embeds")) for choice in command.choices)
            return
        backend = self.loaded.vision
        serial = backend is not None and backend.serial
        if serial and (self._waiting or self._alone or (command.vision is not None and self._by_seq)):
            self._waiting.append(command)
            return
        if serial and command.vision is not None:
            self._alone = True
        self._start(command, out)

    def _start(self, command: Insert, out: Out) -> None:
        tokens, count = command.tokens, len(command.choices)
        key = command.vision.cache_key if command.vision is not None else tokens
        cache, hit = self.prompt_cache.lookup(key)
        log.debug("starting %d sequence(s): %d prompt tokens, %d cached", count, len(tokens), hit)
        try:
            if self._start_solo(command, cache, hit):
                return
            reused = hit
            if command.vision is not None:  # images: their embeddings go in before the batch
                model = self.loaded.model
                layers = copy.deepcopy(cache) if cache is not None else make_prompt_cache(model)
                backend = self.loaded.vision
                if backend is None:
                    raise RuntimeError("a prompt with images for a text model")
                cache, reused = vision.prefill(
                    backend, model, command.vision, hit, layers, self._prefill_step
                )
                hit = min(hit, reused)
            elif count > 1 and len(tokens) > 1:  # n choices: prefill the prompt once for all
                model = self.loaded.model
                # Extended in place: never touch a prompt-cache entry's own arrays.
                layers = copy.deepcopy(cache) if cache is not None else make_prompt_cache(model)
                cache, reused = prefill(model, tokens[hit:-1], layers, self._prefill_step), len(tokens) - 1
            self._stats.prompt_tokens_processed += (reused - hit) + count * (len(tokens) - reused)
            sequences = [self._new_sequence(command, choice, hit) for choice in command.choices]
            try:
                self.batch.add(
                    sequences,
                    prompts=[list(tokens[reused:]) for _ in range(count)],
                    max_tokens=[command.max_tokens] * count,
                    caches=[[copy.copy(layer) for layer in cache] for _ in range(count)] if cache else None,
                    all_tokens=[list(tokens[:reused]) for _ in range(count)] if cache else None,
                    samplers=[make_sampler(choice.sampling, self._xtc_special) for choice in command.choices],
                    logits_processors=[self._processors(c, command.grammar) for c in command.choices],
                )
            except BaseException:
                for seq in sequences:
                    del self._by_seq[seq.seq_id]
                raise
        except Exception as exc:
            log.exception("could not start a sequence")
            out.extend((choice.sink, failed(str(exc))) for choice in command.choices)

    def step(self, out: Out, decoding: bool, clock: DecodeClock) -> float:
        """One bounded embedding batch (sized to ``clock``'s decode step while ``decoding``:
        sequences of any model decode), then one decode step of the lone sequence and of the
        batch, their output into ``out``. Returns the seconds the decode step took."""
        embedder, pacer = self._embedder, self._pacer
        if embedder:
            before, started = embedder.tokens, time.perf_counter()
            budget = pacer.budget(decoding, clock.step, self._prefill_step, IDLE_EMBED_TOKENS)
            ran = embedder.step(budget)
            pacer.embedded(ran, time.perf_counter() - started)
            self._stats.prompt_tokens_processed += embedder.tokens - before
        elapsed = 0.0
        if self._by_seq:
            started = time.perf_counter()
            self._decode(out)
            elapsed = time.perf_counter() - started
        if self._alone and not self._by_seq:
            self._alone = False
            if self.loaded.vision is not None:
                self.loaded.vision.release(self.loaded.model)
        while self._waiting and not self._alone:
            command = self._waiting[0]
            if command.vision is not None and self._by_seq:
                break
            del self._waiting[0]
            self._alone = command.vision is not None
            self._start(command, out)
        return elapsed

    def _decode(self, out: Out) -> None:
        solo = self._solo
        if solo is not None:
            if self.batch:  # company arrived: the lone sequence joins the batch
                self._join_batch(solo, out)
            else:
                self._step_solo(solo, out)
        if self.batch:
            self.batch.step(out, self._ended)

    def _ended(self, seq: Sequence) -> None:
        del self._by_seq[seq.seq_id]

    def cancel(self, seq_id: int) -> bool:
        """Drop a sequence (its client left); False when it is not this runner's."""
        seq = self._by_seq.pop(seq_id, None)
        if seq is None:
            return self._cancel_waiting(seq_id)
        if self._solo is not None and self._solo.seq is seq:
            self._solo = None
        else:
            self.batch.remove(seq)
        return True

    def _cancel_waiting(self, seq_id: int) -> bool:
        for command in self._waiting:
            for choice in command.choices:
                if choice.seq_id == seq_id:
                    command.choices.remove(choice)
                    if not command.choices:
                        self._waiting.remove(command)
                    return True
        return False

    def close(self) -> list[Sequence | Choice]:
        """Free the batch; the sequences still generating (and the choices still waiting to
        start) are returned, to be failed."""
        left: list[Sequence | Choice] = [*self._by_seq.values()]
        left += [choice for command in self._waiting for choice in command.choices]
        self._waiting.clear()
        self._by_seq.clear()
        self._solo = None
        if self._embedder is not None:
            self._embedder.fail_all("the model was unloaded")
        self.batch.close()
        return left

    def _new_sequence(self, command: Insert, choice: Choice, hit: int) -> Sequence:
        seq = Sequence(
            seq_id=choice.seq_id,
            uid=-1,
            sink=choice.sink,
            detokenizer=self.loaded.tokenizer.detokenizer,
            parser=ChoiceParser(
                command.output, reasoning=command.reasoning_format, tool_format=command.tool_format
            ),
            eos=self.eos,
            logprobs=command.logprobs,
            pieces=self._pieces,
            interval=command.interval,
            request_id=command.request_id,
            cache_key=command.vision.cache_key if command.vision is not None else None,
        )
        self._by_seq[choice.seq_id] = seq
        # A plain int written before any event of this sequence is delivered to the loop.
        choice.sink.cached_tokens = hit
        return seq

    def _start_solo(self, command: Insert, cache: list[Any] | None, hit: int) -> bool:
        """Decode a request alone when it is the model's only one and has one choice (False:
        the batch takes it, also when the model's or the cache's layers are not plain KV)."""
        if self._by_seq or not self._solo_ok or len(command.choices) != 1 or command.vision is not None:
            return False
        layers = private_cache(cache, hit) if cache is not None else make_prompt_cache(self.loaded.model)
        if layers is None:
            return False
        choice, tokens = command.choices[0], command.tokens
        common: dict[str, Any] = {
            "sampler": make_sampler(choice.sampling, self._xtc_special),
            "processors": self._processors(choice, command.grammar),
            "max_tokens": command.max_tokens,
            "stop_tokens": self.eos,
            "prefill_step_size": self._prefill_step,
            "stream": self.batch.stream,
            "kv": self.options.kv,
        }
        model, draft = self.loaded.model, self.options.draft
        decoder: SoloDecoder
        # A grammar cannot take back the draft's rejected proposals: constrained output decodes plainly.
        if draft is not None and command.num_draft_tokens > 0 and command.grammar is None:
            num_draft = command.num_draft_tokens
            decoder = SpeculativeDecoder(
                model,
                draft.model,
                tokens[hit:],
                layers,
                tokens[:hit],
                num_draft=num_draft,
                stats=self.draft_stats,
                **common,
            )
        else:
            decoder = SoloDecoder(model, tokens[hit:], layers, tokens[:hit], **common)
        self._stats.prompt_tokens_processed += len(tokens) - hit
        self._solo = _Solo(decoder, self._new_sequence(command, choice, hit))
        return True

    def _step_solo(self, solo: _Solo, out: Out) -> None:
        try:
            response = solo.decoder.step()
        except Exception as exc:  # this sequence's failure is its alone; the model stays
            with tagged(solo.seq.request_id):
                log.exception("a decode step failed")
            self._end_solo(solo, store=False)
            out.append((solo.seq.sink, failed(exc)))
            return
        if response is None:  # a prefill chunk
            return
        self._stats.stepped(1)
        if emit(solo.seq, response, time.monotonic(), out):
            self._end_solo(solo, store=True)

    def _join_batch(self, solo: _Solo, out: Out) -> None:
        """Move the lone sequence into the batch, delivering the token it had in flight."""
        decoder, seq = solo.decoder, solo.seq
        try:
            response, state = decoder.detach()
            if response is not None and emit(seq, response, time.monotonic(), out):
                self._end_solo(solo, store=True)
                return
            if state is None:  # cannot happen: a token that ends the sequence is emitted as final
                raise RuntimeError("the sequence ended without a final event")
            self.batch.add(
                [seq],
                prompts=[state.prompt],
                max_tokens=[state.max_tokens],
                caches=[state.cache],
                all_tokens=[state.all_tokens],
                samplers=[decoder.sampler],
                logits_processors=[decoder.processors],
            )
        except Exception as exc:
            with tagged(seq.request_id):
                log.exception("a sequence could not join the batch")
            self._end_solo(solo, store=False)
            out.append((seq.sink, failed(exc)))
            return
        self._solo = None

    def _end_solo(self, solo: _Solo, *, store: bool) -> None:
        self._solo = None
        self._by_seq.pop(solo.seq.seq_id, None)
        if store:
            tokens, layers = solo.decoder.cache_state()
            self.prompt_cache.store(list(tokens), layers, min_tokens=MIN_REUSE)

    def _processors(self, choice: Choice, grammar: str | None) -> list[Any]:
        processors = make_processors(choice.sampling)
        if grammar is not None:
            loaded = self.loaded
            processors.append(make_constraint(loaded.tokenizer, grammar, loaded.vocab_size, self._grammars))
        return processors
