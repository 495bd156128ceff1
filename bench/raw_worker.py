"""The raw engine floor: mlx-lm called in-process, no HTTP (runs as its own process).

``python -m bench.raw_worker MODEL_DIR`` loads the model, then answers one JSON command
per stdin line with one JSON line on stdout. It is the same work a server must do at
the least: apply the chat template, generate, detokenize every token as it arrives.
Timings are ``time.perf_counter`` seconds relative to the start of each request.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

import mlx.core as mx
from mlx_lm import load
from mlx_lm.generate import BatchGenerator, stream_generate
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import make_sampler

#: mlxd's defaults, so the batched floor runs the engine the way mlxd configures it.
PREFILL_STEP_SIZE = 256
PREFILL_BATCH_SIZE = 8


@dataclass(slots=True)
class _Timing:
    start: float
    times: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def result(self, prompt_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
        return {
            "start": self.start,
            "times": self.times,
            "tokens": len(self.times),
            "prompt_tokens": prompt_tokens,
            "cached_tokens": cached_tokens,
            "text": "".join(self.text),
        }


class RawEngine:
    """A loaded model plus the per-conversation prompt caches of the multi-turn scenario."""

    def __init__(self, model_dir: str) -> None:
        self.model, self.tokenizer = load(model_dir)
        self.eos = [[t] for t in sorted(self.tokenizer.eos_token_ids)]
        self.sessions: dict[str, tuple[list[Any], list[int]]] = {}

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))

    def single(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        session: str | None = None,
        temperature: float = 0.0,
    ) -> dict[str, Any]:
        """One request through ``stream_generate``; with ``session``, reuse its KV cache."""
        origin = time.perf_counter()
        prompt = self.encode(messages)
        cache, feed = self._cache_for(session, prompt)
        timing = _Timing(0.0)
        generated: list[int] = []
        responses = stream_generate(
            self.model,
            self.tokenizer,
            feed,
            max_tokens=max_tokens,
            prompt_cache=cache,
            prefill_step_size=PREFILL_STEP_SIZE,
            sampler=make_sampler(temp=temperature),
        )
        for response in responses:
            timing.times.append(time.perf_counter() - origin)
            timing.text.append(response.text)
            generated.append(response.token)
        if session is not None:
            held = cache[0].offset
            self.sessions[session] = (cache, (prompt + generated)[:held])
        return timing.result(len(prompt), len(prompt) - len(feed))

    def _cache_for(self, session: str | None, prompt: list[int]) -> tuple[list[Any], list[int]]:
        """A KV cache and the prompt tokens it still lacks (the whole prompt when cold)."""
        if session is None or session not in self.sessions:
            return make_prompt_cache(self.model), prompt
        cache, held = self.sessions[session]
        common = 0
        for a, b in zip(held, prompt, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(prompt) - 1)  # at least one token must be fed
        trim_prompt_cache(cache, len(held) - common)
        return cache, prompt[common:]

    def batch(
        self,
        requests: list[list[dict[str, str]]],
        max_tokens: int,
        concurrency: int,
        temperature: float = 0.0,
        prefill_batch_size: int = PREFILL_BATCH_SIZE,
    ) -> dict[str, Any]:
        """Closed loop through one ``BatchGenerator``: ``concurrency`` requests in flight.

        With ``concurrency == len(requests)`` this is one round: every prompt at once.
        """
        generator = BatchGenerator(
            self.model,
            stop_tokens=self.eos,
            sampler=make_sampler(temp=temperature),
            completion_batch_size=concurrency,
            prefill_batch_size=min(prefill_batch_size, concurrency),
            prefill_step_size=PREFILL_STEP_SIZE,
        )
        origin = time.perf_counter()
        pending = deque(requests)
        flying: dict[int, tuple[_Timing, Any, int]] = {}
        results: list[dict[str, Any]] = []
        steps = 0
        try:
            while pending or flying:
                while pending and len(flying) < concurrency:
                    start = time.perf_counter() - origin
                    prompt = self.encode(pending.popleft())
                    (uid,) = generator.insert([prompt], max_tokens=[max_tokens])
                    flying[uid] = (_Timing(start), self.tokenizer.detokenizer, len(prompt))
                _, responses = generator.next()
                steps += bool(responses)
                now = time.perf_counter() - origin
                for response in responses:
                    timing, detokenizer, prompt_tokens = flying[response.uid]
                    if response.finish_reason != "stop":
                        detokenizer.add_token(response.token)
                    timing.times.append(now)
                    if response.finish_reason is not None:
                        detokenizer.finalize()
                    timing.text.append(detokenizer.last_segment)
                    if response.finish_reason is not None:
                        del flying[response.uid]
                        results.append(timing.result(prompt_tokens))
        finally:
            generator.close()
        return {"wall": time.perf_counter() - origin, "requests": results, "steps": steps}

    def prefill(self, requests: list[list[dict[str, str]]]) -> dict[str, Any]:
        """Seconds to prefill every prompt in one batch, until each has its first token."""
        generator = BatchGenerator(
            self.model,
            stop_tokens=self.eos,
            completion_batch_size=len(requests),
            prefill_batch_size=len(requests),
            prefill_step_size=PREFILL_STEP_SIZE,
        )
        origin = time.perf_counter()
        try:
            generator.insert([self.encode(m) for m in requests], max_tokens=[2] * len(requests))
            first: set[int] = set()
            while len(first) < len(requests):
                _, responses = generator.next()
                first.update(r.uid for r in responses)
            return {"seconds": time.perf_counter() - origin}
        finally:
            generator.close()

    def memory(self) -> dict[str, Any]:
        """MLX's own memory counters (bytes)."""
        return {
            "active": mx.get_active_memory(),
            "cache": mx.get_cache_memory(),
            "peak": mx.get_peak_memory(),
        }


def _serve(engine: RawEngine, commands: TextIO, answers: TextIO) -> None:
    ops = {"single": engine.single, "batch": engine.batch, "prefill": engine.prefill, "memory": engine.memory}
    for line in commands:
        command = json.loads(line)
        op = command.pop("op")
        if op == "quit":
            return
        answer = ops[op](**command)
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main() -> None:
    """Load the model, say ready, then serve commands until stdin closes."""
    answers = sys.stdout
    sys.stdout = sys.stderr  # anything mlx-lm prints must not corrupt the protocol
    engine = RawEngine(sys.argv[1])
    engine.single([{"role": "user", "content": "warm up"}], max_tokens=8)
    answers.write(json.dumps({"ready": True}) + "\n")
    answers.flush()
    try:
        _serve(engine, sys.stdin, answers)
    finally:
        mx.clear_streams()


if __name__ == "__main__":
    main()
