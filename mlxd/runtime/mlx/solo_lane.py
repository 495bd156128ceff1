"""The one sequence of a model that decodes outside the batch.

A request that is its model's only one, with one choice and no images, decodes alone
(``solo.py``: mlx-lm's plain ``generate_step`` loop, or the speculative decoder when the
unit has a draft model). When company arrives it moves into the batch, token for token
unchanged; when it ends, its KV cache goes into the prompt cache like a batch sequence's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlxd.logs import tagged
from mlxd.runtime.mlx.batch import Batch, Out, emit, failed
from mlxd.runtime.mlx.commands import Insert
from mlxd.runtime.mlx.prompt_cache import MIN_REUSE, PromptCache
from mlxd.runtime.mlx.sequence import Sequence
from mlxd.runtime.mlx.solo import SoloDecoder
from mlxd.runtime.mlx.speculative import DraftStats, SpeculativeDecoder
from mlxd.runtime.mlx.stats import WorkerStats
from mlxd.runtime.mlx.unit_options import UnitOptions

log = logging.getLogger("mlxd.runtime")


@dataclass(slots=True)
class _Solo:
    """The one sequence decoding outside the batch."""

    decoder: SoloDecoder
    seq: Sequence


class SoloLane:
    """A model's lone sequence: started, stepped, moved into ``batch``, or ended into
    ``prompt_cache``; ``forget`` tells the runner a sequence is gone."""

    def __init__(
        self,
        model: Any,
        batch: Batch,
        prompt_cache: PromptCache,
        stats: WorkerStats,
        options: UnitOptions,
        forget: Callable[[Sequence], object],
    ) -> None:
        self._model = model
        self._batch = batch
        self._prompt_cache = prompt_cache
        self._stats = stats
        self._options = options
        self._forget = forget
        self._solo: _Solo | None = None
        #: What this unit's draft model proposed and what was accepted.
        self.draft_stats = DraftStats()

    def __bool__(self) -> bool:
        return self._solo is not None

    def start(self, command: Insert, seq: Sequence, layers: list[Any], hit: int, **common: Any) -> None:
        """Decode ``command``'s one choice alone from ``layers`` (holding its first ``hit``
        tokens); ``common``: the sampler, processors and limits of ``SoloDecoder``."""
        tokens, draft = command.tokens, self._options.draft
        decoder: SoloDecoder
        # A grammar cannot take back the draft's rejected proposals: constrained output decodes plainly.
        if draft is not None and command.num_draft_tokens > 0 and command.grammar is None:
            decoder = SpeculativeDecoder(
                self._model,
                draft.model,
                tokens[hit:],
                layers,
                tokens[:hit],
                num_draft=command.num_draft_tokens,
                stats=self.draft_stats,
                stream=self._batch.stream,
                kv=self._options.kv,
                **common,
            )
        else:
            decoder = SoloDecoder(
                self._model,
                tokens[hit:],
                layers,
                tokens[:hit],
                stream=self._batch.stream,
                kv=self._options.kv,
                **common,
            )
        self._stats.prompt_tokens_processed += len(tokens) - hit
        self._solo = _Solo(decoder, seq)

    def step(self, out: Out) -> None:
        """One token of the lone sequence, or its move into the batch once company arrived."""
        solo = self._solo
        if solo is None:
            return
        if self._batch:
            self._join_batch(solo, out)
        else:
            self._step(solo, out)

    def drop(self, seq: Sequence) -> bool:
        """Forget ``seq`` if it is the lone sequence (its client left)."""
        if self._solo is not None and self._solo.seq is seq:
            self._solo = None
            return True
        return False

    def clear(self) -> None:
        self._solo = None

    def _step(self, solo: _Solo, out: Out) -> None:
        try:
            response = solo.decoder.step()
        except Exception as exc:  # this sequence's failure is its alone; the model stays
            with tagged(solo.seq.request_id):
                log.exception("a decode step failed")
            self._end(solo, store=False)
            out.append((solo.seq.sink, failed(exc)))
            return
        if response is None:  # a prefill chunk
            return
        self._stats.stepped(1)
        if emit(solo.seq, response, time.monotonic(), out):
            self._end(solo, store=True)

    def _join_batch(self, solo: _Solo, out: Out) -> None:
        """Move the lone sequence into the batch, delivering the token it had in flight."""
        decoder, seq = solo.decoder, solo.seq
        try:
            response, state = decoder.detach()
            if response is not None and emit(seq, response, time.monotonic(), out):
                self._end(solo, store=True)
                return
            if state is None:  # cannot happen: a token that ends the sequence is emitted as final
                raise RuntimeError("the sequence ended without a final event")
            self._batch.add(
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
            self._end(solo, store=False)
            out.append((seq.sink, failed(exc)))
            return
        self._solo = None

    def _end(self, solo: _Solo, *, store: bool) -> None:
        self._solo = None
        self._forget(solo.seq)
        if store:
            tokens, layers = solo.decoder.cache_state()
            self._prompt_cache.store_later(list(tokens), layers, min_tokens=MIN_REUSE)
