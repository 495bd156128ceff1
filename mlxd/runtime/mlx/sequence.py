"""One generating sequence's output: detokenized, stop strings cut, held or delivered.

The worker feeds every generated token of a sequence here, from the batch or from the
solo loop alike, and delivers what comes back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mlxd.logs import tagged
from mlxd.output.events import TokenInfo
from mlxd.output.stops import StopMatcher
from mlxd.runtime.engine import FinishReason, GenerationEvent
from mlxd.runtime.mlx.commands import Sink
from mlxd.runtime.mlx.sampling import top_logprobs
from mlxd.runtime.token_pieces import TokenPieces

log = logging.getLogger("mlxd.runtime")


@dataclass(slots=True)
class Sequence:
    """A request's choice while it generates: where its output goes and how it is cut."""

    seq_id: int
    #: Its id in the model's ``BatchGenerator`` (-1 while it decodes alone).
    uid: int
    sink: Sink
    detokenizer: Any
    stops: StopMatcher
    eos: frozenset[int]
    #: ``None``: no logprobs; ``k``: the sampled token's plus the top ``k``.
    logprobs: int | None
    pieces: TokenPieces
    generated: int = 0
    #: Seconds between two deliveries (0: every step; ``None``: once, at the end).
    interval: float | None = 0.0
    #: Output decoded since the last delivery, while ``interval`` holds it back.
    held: list[GenerationEvent] = field(default_factory=list)
    #: When held output may go out (``time.monotonic()``; 0: the first one goes at once).
    due: float = 0.0
    #: The request's id, carried by every log line about this sequence.
    request_id: str | None = None

    def output(self, response: Any, now: float) -> GenerationEvent | None:
        """The event to deliver for one generated token, or ``None`` while it is held.

        ``response`` is mlx-lm's (or the solo loop's): ``token``, ``logprobs`` (one row)
        and ``finish_reason``. An error here fails this sequence only.
        """
        try:
            event = self._advance(response)
        except Exception as exc:
            with tagged(self.request_id):
                log.exception("a sequence failed")
            event = GenerationEvent(finish_reason="error", error=f"generation failed: {exc}")
        if self.interval == 0.0:
            return event
        self.held.append(event)
        if event.finish_reason is None and (self.interval is None or now < self.due):
            return None
        event = _merge(self.held) if len(self.held) > 1 else event
        self.held = []
        if self.interval is not None:
            self.due = now + self.interval
        return event

    def _advance(self, response: Any) -> GenerationEvent:
        token: int = response.token
        finish: FinishReason | None = response.finish_reason
        self.generated += 1
        detokenizer = self.detokenizer
        tokens: list[TokenInfo] | None = None
        if finish == "stop" and token in self.eos:
            detokenizer.finalize()
        else:
            detokenizer.add_token(token)
            if finish is not None:
                detokenizer.finalize()
            if self.logprobs is not None:
                tokens = [self._token_info(token, response.logprobs, self.logprobs)]
        text, stopped = self.stops.feed(detokenizer.last_segment)
        if stopped:
            finish = "stop"
        elif finish is not None:
            text += self.stops.flush()
        return GenerationEvent(
            text=text, tokens=tokens, finish_reason=finish, completion_tokens=self.generated
        )

    def _token_info(self, token: int, logprobs: Any, k: int) -> TokenInfo:
        pieces = self.pieces
        top = [(i, *pieces(i), v) for i, v in top_logprobs(logprobs, k)]
        return TokenInfo(token, *pieces(token), float(logprobs[token].item()), top)


def _merge(events: list[GenerationEvent]) -> GenerationEvent:
    """One event carrying a whole held-back output."""
    last = events[-1]
    tokens = [t for e in events if e.tokens for t in e.tokens] if last.tokens is not None else None
    return GenerationEvent(
        text="".join(e.text for e in events),
        tokens=tokens,
        finish_reason=last.finish_reason,
        completion_tokens=last.completion_tokens,
        error=last.error,
    )
