"""Drive the raw-engine worker process (``bench.raw_worker``) from the harness.

The engine runs in its own process so MLX state never mixes with the harness, and it
stays loaded for the whole run so its measurements interleave with the servers'.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.clients import LoadResult, RequestResult
from bench.prompts import Message


def _result(answer: dict[str, Any]) -> RequestResult:
    times = [float(t) for t in answer["times"]]
    return RequestResult(
        start=float(answer["start"]),
        times=times,
        tokens=int(answer["tokens"]),
        prompt_tokens=int(answer["prompt_tokens"]),
        cached_tokens=int(answer.get("cached_tokens", 0)),
        end=times[-1] if times else float(answer["start"]),
        text=str(answer["text"]),
    )


class RawEngine:
    """The mlx-lm engine in a subprocess: single streams and closed-loop batches."""

    name = "raw engine"

    def __init__(self, model_dir: Path, log_path: Path) -> None:
        self._log = log_path.open("wb")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.raw_worker", str(model_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        if not self._call(None).get("ready"):
            raise RuntimeError("the raw engine did not start")

    @property
    def pid(self) -> int:
        """The worker process's id."""
        return self._process.pid

    def _call(self, command: dict[str, Any] | None) -> dict[str, Any]:
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        if command is not None:
            self._process.stdin.write(json.dumps(command) + "\n")
            self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the raw engine exited ({self._process.poll()}); see {self._log.name}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def single(
        self, messages: list[Message], max_tokens: int, session: str | None = None, temperature: float = 0.0
    ) -> RequestResult:
        """One request through ``stream_generate`` (``session`` reuses its KV cache)."""
        command = {
            "op": "single",
            "messages": messages,
            "max_tokens": max_tokens,
            "session": session,
            "temperature": temperature,
        }
        return _result(self._call(command))

    def batch(
        self,
        requests: list[list[Message]],
        max_tokens: int,
        concurrency: int,
        *,
        temperature: float = 0.0,
        prefill_batch_size: int | None = None,
    ) -> LoadResult:
        """Requests through one ``BatchGenerator``, ``concurrency`` in flight."""
        command: dict[str, Any] = {
            "op": "batch",
            "requests": requests,
            "max_tokens": max_tokens,
            "concurrency": concurrency,
            "temperature": temperature,
        }
        if prefill_batch_size is not None:
            command["prefill_batch_size"] = prefill_batch_size
        answer = self._call(command)
        results = [_result(r) for r in answer["requests"]]
        return LoadResult(float(answer["wall"]), results, steps=float(answer["steps"]))

    def prefill(self, requests: list[list[Message]]) -> float:
        """Seconds to prefill all ``requests`` in one batch, up to each one's first token."""
        return float(self._call({"op": "prefill", "requests": requests})["seconds"])

    def memory(self) -> dict[str, int]:
        """The engine process's MLX memory counters (active, cache, peak bytes)."""
        return {k: int(v) for k, v in self._call({"op": "memory"}).items()}

    def close(self) -> None:
        """Ask the worker to quit, and wait for it."""
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self._process.stdin.close()
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
