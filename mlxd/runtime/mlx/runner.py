"""One loaded model unit on the worker thread: its batch, its prompt cache, its lone sequence.

A runner owns mlx-lm's ``BatchGenerator`` for its model. A request that is the model's
only one decodes alone (``solo_lane.py``: no batch machinery) and moves into the batch,
token for token unchanged, when company arrives. Finished sequences leave their KV cache in the
runner's prompt cache. New ``[runtime]`` settings apply before the next step. A prompt
with images whose backend is ``serial`` (Qwen's 3-D positions) runs without company:
requests that arrive meanwhile wait, in order, until it ends.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from mlx_lm.models.cache import KVCache, make_prompt_cache

from mlxd.runtime.mlx import vision
from mlxd.runtime.mlx.batch import Batch, Out, failed
from mlxd.runtime.mlx.commands import Choice, Embed, Insert
from mlxd.runtime.mlx.constrained import GrammarCache, make_constraint
from mlxd.runtime.mlx.embed import DecoderForward, Embedder
from mlxd.runtime.mlx.image_gate import ImageGate
from mlxd.runtime.mlx.loading import LoadedModel
from mlxd.runtime.mlx.pacing import DecodeClock, Pacer
from mlxd.runtime.mlx.prompt_cache import PromptCache
from mlxd.runtime.mlx.sampling import make_processors, make_sampler, xtc_special_tokens
from mlxd.runtime.mlx.sequence import Sequence
from mlxd.runtime.mlx.solo import prefill, private_cache
from mlxd.runtime.mlx.solo_lane import SoloLane
from mlxd.runtime.mlx.stats import WorkerStats
from mlxd.runtime.mlx.unit_options import UnitOptions
from mlxd.runtime.mlx.warmup import warm_up
from mlxd.runtime.specs import RuntimeSettings
from mlxd.runtime.token_pieces import TokenPieces

log = logging.getLogger("mlxd.runtime")


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
        # Sliding-window and recurrent layers always go through the batch (an encoder only embeds).
        self._solo_ok = loaded.generates and all(
            type(layer) is KVCache for layer in make_prompt_cache(loaded.model)
        )
        self._by_seq: dict[int, Sequence] = {}
        #: The lone sequence decoding outside the batch (``solo_lane``).
        self.solo = SoloLane(loaded.model, self.batch, self.prompt_cache, stats, options, self._forget)
        self._embedder: Embedder | None = None
        #: Requests waiting for a serial prompt with images to end (or to start alone).
        self._gate = ImageGate(loaded.vision is not None and loaded.vision.serial)
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
        return bool(self._by_seq) or bool(self._embedder) or bool(self._gate)

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
        if self._gate.admit(command, bool(self._by_seq)):
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
        sequences of any model decode; then some passes run none), then one decode step of
        the lone sequence and of the batch, their output into ``out``. Returns the seconds
        the decode step took."""
        embedder, pacer = self._embedder, self._pacer
        budget = pacer.budget(decoding, clock.step, self._prefill_step) if embedder else 0
        if embedder and budget:
            tokens, inputs, started = embedder.tokens, embedder.inputs, time.perf_counter()
            ran = embedder.step(budget)
            if decoding:
                pacer.embedded(ran, time.perf_counter() - started, clock.step)
            else:
                pacer.idle(ran, time.perf_counter() - started)
            self._stats.embedded(ran, embedder.tokens - tokens, embedder.inputs - inputs)
        elapsed = 0.0
        if self._by_seq:
            started = time.perf_counter()
            self._decode(out)
            elapsed = time.perf_counter() - started
        if self._gate.ended_alone(bool(self._by_seq)) and self.loaded.vision is not None:
            self.loaded.vision.release(self.loaded.model)
        while (command := self._gate.next(bool(self._by_seq))) is not None:
            self._start(command, out)
        return elapsed

    def _decode(self, out: Out) -> None:
        self.solo.step(out)  # company arrived: the lone sequence joins the batch
        if self.batch:
            self.batch.step(out, self._ended)

    def _ended(self, seq: Sequence) -> None:
        del self._by_seq[seq.seq_id]

    def _forget(self, seq: Sequence) -> None:
        self._by_seq.pop(seq.seq_id, None)

    def cancel(self, seq_id: int) -> bool:
        """Drop a sequence (its client left); False when it is not this runner's."""
        seq = self._by_seq.pop(seq_id, None)
        if seq is None:
            return self._gate.cancel(seq_id)
        if not self.solo.drop(seq):
            self.batch.remove(seq)
        return True

    def close(self) -> list[Sequence | Choice]:
        """Free the batch; the sequences still generating (and the choices still waiting to
        start) are returned, to be failed."""
        left: list[Sequence | Choice] = [*self._by_seq.values()]
        left += self._gate.clear()
        self._by_seq.clear()
        self.solo.clear()
        if self._embedder is not None:
            self._embedder.fail_all("the model was unloaded")
        self.batch.close()
        return left

    def _new_sequence(self, command: Insert, choice: Choice, hit: int) -> Sequence:
        seq = Sequence.for_choice(command, choice, self.loaded.tokenizer.detokenizer, self.eos, self._pieces)
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
        choice = command.choices[0]
        self.solo.start(
            command,
            self._new_sequence(command, choice, hit),
            layers,
            hit,
            sampler=make_sampler(choice.sampling, self._xtc_special),
            processors=self._processors(choice, command.grammar),
            max_tokens=command.max_tokens,
            stop_tokens=self.eos,
            prefill_step_size=self._prefill_step,
        )
        return True

    def _processors(self, choice: Choice, grammar: str | None) -> list[Any]:
        processors = make_processors(choice.sampling)
        if grammar is not None:
            loaded = self.loaded
            processors.append(make_constraint(loaded.tokenizer, grammar, loaded.vocab_size, self._grammars))
        return processors
