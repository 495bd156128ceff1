"""Speculative decoding for a sequence decoding alone: a small draft model proposes, the model checks.

Each round the draft model proposes ``num_draft`` tokens one by one; the model runs them
all in one forward pass and samples its own token at every position. Proposals are
accepted while they equal the model's own choice, and the model's token at the first
difference (or after the last proposal) comes free. Under greedy sampling the output is
therefore the model's own, token for token; the draft only decides how many tokens one
forward pass yields. This is mlx-lm's ``speculative_generate_step`` reshaped to the solo
decoder's interface: a prefill chunk per call, one token per call (a round's extra tokens
wait in a buffer), and ``detach`` at any point, when another request for the model
arrives and the sequence moves into the batch without its draft. Tokens still in the
buffer were never delivered: ``detach`` rewinds the cache to the last delivered token,
so nothing the client saw changes.

Constrained decoding keeps the plain solo decoder: a grammar matcher cannot take back
the proposals the model rejects.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

from mlxd.runtime.mlx.kv_layers import quantize_solo
from mlxd.runtime.mlx.solo import Detached, SoloDecoder, SoloResponse


@dataclass(slots=True)
class DraftStats:
    """A unit's speculative rounds: how many ran, and what the draft proposed and got accepted."""

    rounds: int = 0
    proposed: int = 0
    accepted: int = 0


class SpeculativeDecoder(SoloDecoder):
    """The solo decoder with a draft model: several tokens per forward pass of the model."""

    def __init__(
        self,
        model: Any,
        draft: Any,
        prompt: list[int],
        cache: list[Any],
        cached_tokens: list[int],
        *,
        num_draft: int,
        stats: DraftStats | None = None,
        **options: Any,
    ) -> None:
        """``options``: the solo decoder's (sampler, processors, limits, stream, kv)."""
        super().__init__(model, prompt, cache, cached_tokens, **options)
        self.draft = draft
        self.num_draft = num_draft
        self.draft_cache = make_prompt_cache(draft)
        #: Tokens the draft must read before it can propose (it has no prompt cache).
        self._draft_todo = [*cached_tokens, *prompt[:-1]]
        #: How many of ``fed + [next]`` the draft's cache holds.
        self._draft_len = 0
        #: The token the model reads next (not in its cache yet); None until prefilled.
        self._next: int | None = None
        self._buffer: deque[SoloResponse] = deque()
        self.stats = stats if stats is not None else DraftStats()

    def step(self) -> SoloResponse | None:
        """A prefill chunk (``None``), or the next token (a round runs when none is buffered)."""
        with mx.stream(self._stream):
            if len(self._unfed) > 1:
                self._prefill_chunk()
                return None
            if self._draft_todo:
                chunk = self._draft_todo[: self._prefill_step_size]
                del self._draft_todo[: len(chunk)]
                self.draft(mx.array(chunk)[None], cache=self.draft_cache)
                mx.eval([layer.state for layer in self.draft_cache])
                self._draft_len += len(chunk)
                return None
            if self._next is None:
                self._next = self._unfed[0]
                self._unfed = []
            if not self._buffer:
                self._round()
            response = self._buffer.popleft()
            self.generated += 1
            return response

    def detach(self) -> tuple[SoloResponse | None, Detached | None]:
        """Stop here; the batch goes on from the last delivered token (the draft's cache is dropped)."""
        if self._next is None:  # still prefilling: the batch takes the unfed prompt
            cache = self.cache if self.fed else None
            return None, Detached(self._unfed, cache, self.fed, self._max_tokens - self.generated)
        self._rewind(len(self._buffer))
        return None, Detached([self._next], self.cache, self.fed, self._max_tokens - self.generated)

    def cache_state(self) -> tuple[list[int], list[Any]]:
        """The tokens the model's cache holds once the undelivered ones are dropped, and it."""
        self._rewind(len(self._buffer))
        return self.fed, self.cache

    def _rewind(self, count: int) -> None:
        """Take back the last ``count`` tokens produced (buffered, never delivered): the cache
        ends just before the last token kept, which the model reads next."""
        self._buffer.clear()
        if not count or self._next is None:
            return
        tokens = [*self.fed, self._next][:-count]
        trim_prompt_cache(self.cache, count)
        self.fed, self._next = tokens[:-1], tokens[-1]

    def _round(self) -> None:
        """Draft, check in one forward pass, buffer the accepted tokens and the model's own."""
        assert self._next is not None
        sequence = [*self.fed, self._next]
        count = min(self.num_draft, self._max_tokens - self.generated - 1)
        context = mx.array(sequence) if self.processors else None
        drafts = self._propose(sequence, count, context) if count > 0 else mx.array([], dtype=mx.uint32)
        if self._kv is not None:
            quantize_solo(self.cache, self._kv)
        inputs = mx.concatenate([mx.array([self._next], dtype=mx.uint32), drafts.astype(mx.uint32)])
        logits = self.model(inputs[None], cache=self.cache)[0]
        if context is not None:
            rows = [
                self._process(mx.concatenate([context, drafts[:j]]), logits[j : j + 1])
                for j in range(count + 1)
            ]
            logits = mx.concatenate(rows, axis=0)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        chosen = self.sampler(logprobs)
        mx.eval(chosen, drafts)
        ours: list[int] = chosen.tolist()
        theirs: list[int] = drafts.tolist()  # type: ignore[assignment]
        accepted = 0
        while accepted < count and ours[accepted] == theirs[accepted]:
            accepted += 1
        self.stats.rounds += 1
        self.stats.proposed += count
        self.stats.accepted += accepted
        # The cache holds next + every proposal: keep next + the accepted ones.
        trim_prompt_cache(self.cache, count - accepted)
        self.fed = [*sequence, *theirs[:accepted]]
        self._next = ours[accepted]
        if count:  # the draft read the sequence and all but its last proposal
            kept = min(accepted, count - 1)
            trim_prompt_cache(self.draft_cache, count - 1 - kept)
            self._draft_len = len(sequence) + kept
        generated = self.generated
        buffer: list[SoloResponse] = []
        for j, token in enumerate(ours[: accepted + 1]):
            generated += 1
            finish = (
                "stop" if token in self.stop_tokens else "length" if generated >= self._max_tokens else None
            )
            buffer.append(SoloResponse(token, logprobs[j], finish))
            if finish is not None:  # what follows the end is taken back
                self._rewind(accepted + 1 - len(buffer))
                break
        self._buffer.extend(buffer)

    def _propose(self, sequence: list[int], count: int, context: Any) -> Any:
        """``count`` draft tokens after ``sequence`` (lazy: evaluated with the check)."""
        inputs = mx.array(sequence[self._draft_len :])
        proposals: list[Any] = []
        for _ in range(count):
            logits = self.draft(inputs[None], cache=self.draft_cache)[:, -1, :]
            if context is not None:
                logits = self._process(mx.concatenate([context, *proposals]), logits)
            token = self._sample(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
            mx.async_eval(token)  # type: ignore[no-untyped-call]
            proposals.append(token)
            inputs = token
        return mx.concatenate(proposals)

    def _process(self, context: Any, logits: Any) -> Any:
        for processor in self.processors:
            logits = processor(context, logits)
        return logits
