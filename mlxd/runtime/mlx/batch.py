"""A model's continuous batch: mlx-lm's ``BatchGenerator`` and the sequences decoding in it.

Sequences join between decode steps and leave when they finish, are cancelled, or their
output parser ends them (a stop string, the last allowed tool call: mlx-lm knows neither). A finished sequence's KV cache goes to
the model's prompt cache.
"""

from __future__ import annotations

import contextlib
import logging
import time
import types
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx_lm.generate
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import make_prompt_cache

from mlxd.logs import tagged
from mlxd.runtime.engine import GenerationEvent
from mlxd.runtime.mlx.commands import Sink
from mlxd.runtime.mlx.kv_layers import for_batch
from mlxd.runtime.mlx.prompt_cache import PromptCache
from mlxd.runtime.mlx.sequence import Sequence
from mlxd.runtime.mlx.stats import WorkerStats
from mlxd.runtime.specs import KvSettings, RuntimeSettings

log = logging.getLogger("mlxd.runtime")


def _keep_buffers() -> None:
    """mlx-lm's batch code empties MLX's buffer cache after every prefill chunk and every
    512 steps. The worker bounds that cache instead (``mx.set_cache_limit``), and an empty
    cache makes the next decode steps allocate every buffer anew: on a GPU that cost the
    steps after each admission time that the batch paid as a whole. So mlx-lm's generation
    module sees ``mlx.core`` with a ``clear_cache`` that keeps the buffers; the worker still
    clears the cache itself where it frees memory for good (a model unloaded)."""
    shim = types.ModuleType(mx.__name__)
    shim.__dict__.update(mx.__dict__)
    shim.clear_cache = lambda: None  # type: ignore[attr-defined]
    mlx_lm.generate.mx = shim


_keep_buffers()

#: Events to deliver to the event loop after this pass of the worker loop.
Out = list[tuple[Sink, GenerationEvent]]


def failed(exc: BaseException | str) -> GenerationEvent:
    """The last delivery of a sequence that failed."""
    return GenerationEvent.failure(exc if isinstance(exc, str) else f"generation failed: {exc}")


def emit(seq: Sequence, response: Any, now: float, out: Out) -> bool:
    """Turn one generated token into output, delivered or held; True when the sequence ended
    (its end token or length, a stop string, or its last allowed tool call)."""
    delivery = seq.output(response, now)
    if delivery is None:
        return False
    out.append((seq.sink, delivery))
    return delivery.finish is not None


class Batch:
    """The sequences one ``BatchGenerator`` decodes together."""

    def __init__(
        self,
        model: Any,
        eos: frozenset[int],
        prompt_cache: PromptCache,
        stats: WorkerStats,
        kv: KvSettings | None = None,
    ) -> None:
        self.generator: Any = BatchGenerator(model, stop_tokens=[[t] for t in sorted(eos)])
        #: A quantized KV cache: every sequence's layers join the batch wrapped (``kv_quant``).
        self.kv = kv
        self._prompt_cache = prompt_cache
        self._stats = stats
        self._by_uid: dict[int, Sequence] = {}

    def __bool__(self) -> bool:
        return bool(self._by_uid)

    @property
    def stream(self) -> Any:
        """The MLX stream the batch decodes on (the solo decoder uses it too)."""
        return self.generator.stream

    def configure(self, settings: RuntimeSettings) -> None:
        """Batch size and prefill step for the next steps.

        Every waiting prompt is prefilled together (up to the batch size), in chunks of the
        prefill step so a long one does not stall the decoding rows: 64 clients arriving at
        once start after one batched prefill instead of eight (their first tokens came
        seconds apart on a GPU when admitted 8 at a time).
        """
        generator = self.generator
        generator.prefill_batch_size = settings.max_batch_size
        generator.completion_batch_size = settings.max_batch_size
        generator.prefill_step_size = settings.prefill_step_size
        # mlx-lm keeps a copy in its running prompt batch, which chunks again with it.
        generator._prompt_batch.prefill_step_size = settings.prefill_step_size

    def add(self, sequences: list[Sequence], **insert: Any) -> None:
        """Insert sequences (``insert``: the arguments of ``BatchGenerator.insert``)."""
        if self.kv is not None:
            model, kv = self.generator.model, self.kv
            caches = insert.get("caches") or [None] * len(sequences)
            insert["caches"] = [
                for_batch(c if c is not None else make_prompt_cache(model), kv) for c in caches
            ]
        uids = self.generator.insert(**insert)
        for uid, seq in zip(uids, sequences, strict=True):
            seq.uid = uid
            self._by_uid[uid] = seq

    def remove(self, seq: Sequence) -> None:
        """Drop a sequence before the next step."""
        if self._by_uid.pop(seq.uid, None) is not None:
            self.generator.remove([seq.uid])

    def step(self, out: Out, ended: Callable[[Sequence], None]) -> None:
        """One decode step; every sequence that leaves the batch is passed to ``ended``."""
        try:
            _, responses = self.generator.next()
        except Exception as exc:  # the batch itself failed: fail its sequences, keep the model
            log.exception("a decode step failed")
            for seq in self._by_uid.values():
                with tagged(seq.request_id):
                    log.error("generation failed: %s", exc)
                out.append((seq.sink, failed(exc)))
                ended(seq)
                with contextlib.suppress(Exception):
                    self.generator.remove([seq.uid])
            self._by_uid.clear()
            return
        if responses:
            self._stats.stepped(len(responses))
        now = time.monotonic()
        cache = self._prompt_cache
        leaving: dict[int, Sequence] = {}
        for response in responses:
            found = self._by_uid.get(response.uid)
            if found is None or not emit(found, response, now, out):
                continue
            del self._by_uid[response.uid]
            ended(found)
            if response.finish_reason is None:  # its parser ended it: mlx-lm does not know
                leaving[response.uid] = found
            elif response.prompt_cache is not None:
                cache.store_later(found.cache_tokens(response.all_tokens), response.prompt_cache)
        if leaving:
            caches = self.generator.remove(list(leaving), return_prompt_caches=cache.max_bytes > 0)
            for uid, (layers, tokens) in caches.items():
                cache.store_later(leaving[uid].cache_tokens(list(tokens)), layers)

    def close(self) -> None:
        """Free the batch (its sequences are the runner's to fail)."""
        self._by_uid.clear()
        self.generator.close()
