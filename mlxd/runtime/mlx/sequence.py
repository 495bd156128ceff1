"""One generating sequence's output: detokenized, parsed into typed events, held or delivered.

The worker feeds every generated token of a sequence here, from the batch or from the
solo loop alike. Its output parser (``mlxd.output``) cuts stop strings, reasoning and
tool calls in this one place, so a stop string or the last allowed tool call ends the
sequence at the token that completed it, and what the HTTP side receives are events
ready to encode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mlxd.logs import tagged
from mlxd.output.events import Event, Finish, FinishReason, TokenInfo
from mlxd.output.parser import ChoiceParser
from mlxd.runtime.engine import GenerationEvent
from mlxd.runtime.mlx.commands import Choice, Insert, Sink
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
    parser: ChoiceParser
    eos: frozenset[int]
    #: ``None``: no logprobs; ``k``: the sampled token's plus the top ``k``.
    logprobs: int | None
    pieces: TokenPieces
    generated: int = 0
    #: Seconds between two deliveries (0: every step; ``None``: once, at the end).
    interval: float | None = 0.0
    #: Events parsed since the last delivery, while ``interval`` holds them back.
    held: list[Event] = field(default_factory=list)
    #: When held output may go out (``time.monotonic()``; 0: the first one goes at once).
    due: float = 0.0
    #: The request's id, carried by every log line about this sequence.
    request_id: str | None = None
    #: A prompt with images: its prompt-cache key (each image's tokens carry the image's id).
    cache_key: list[int] | None = None

    @classmethod
    def for_choice(
        cls, command: Insert, choice: Choice, detokenizer: Any, eos: frozenset[int], pieces: TokenPieces
    ) -> Sequence:
        """The sequence of one choice of an inserted request, with its own output parser."""
        if command.continues_text:
            keep_leading_space(detokenizer)
        return cls(
            seq_id=choice.seq_id,
            uid=-1,
            sink=choice.sink,
            detokenizer=detokenizer,
            parser=ChoiceParser(
                command.output, reasoning=command.reasoning_format, tool_format=command.tool_format
            ),
            eos=eos,
            logprobs=command.logprobs,
            pieces=pieces,
            interval=command.interval,
            request_id=command.request_id,
            cache_key=command.vision.cache_key if command.vision is not None else None,
        )

    def cache_tokens(self, tokens: list[int]) -> list[int]:
        """The prompt-cache key of the tokens this sequence's cache holds."""
        key = self.cache_key
        if key is None:
            return tokens
        return key + list(tokens[len(key) :]) if len(tokens) >= len(key) else key[: len(tokens)]

    def output(self, response: Any, now: float) -> GenerationEvent | None:
        """What to deliver for one generated token, or ``None`` while it is held (or the
        parser holds the text back for a tag that may be starting).

        ``response`` is mlx-lm's (or the solo loop's): ``token``, ``logprobs`` (one row)
        and ``finish_reason``. An error here fails this sequence only. The sequence has
        ended when the delivery's ``finish`` is set (see ``ended``).
        """
        try:
            events = self._advance(response)
        except Exception as exc:
            with tagged(self.request_id):
                log.exception("a sequence failed")
            events = [Finish("error", self.generated, f"generation failed: {exc}")]
        final = bool(events) and isinstance(events[-1], Finish)
        if self.interval == 0.0:
            return GenerationEvent(events, self.generated) if events else None
        self.held.extend(events)
        if not self.held or (not final and (self.interval is None or now < self.due)):
            return None
        delivery = GenerationEvent(self.held, self.generated)
        self.held = []
        if self.interval is not None:
            self.due = now + self.interval
        return delivery

    def _advance(self, response: Any) -> list[Event]:
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
        parser = self.parser
        events = parser.feed(detokenizer.last_segment, tokens)
        if finish is not None:
            events += parser.finish(finish, self.generated)
        elif parser.done:  # a stop string, or the last allowed tool call: no more tokens needed
            events += parser.finish("stop", self.generated)
        return events

    def _token_info(self, token: int, logprobs: Any, k: int) -> TokenInfo:
        pieces = self.pieces
        top = [(i, *pieces(i), v) for i, v in top_logprobs(logprobs, k)]
        return TokenInfo(token, *pieces(token), float(logprobs[token].item()), top)


def keep_leading_space(detokenizer: Any) -> None:
    """Keep the space the first token starts with (" time" after "Once upon a", as OpenAI's
    completions return it). mlx-lm's SentencePiece and byte-level BPE detokenizers drop it,
    as suits a chat reply; the naive one decodes as the tokenizer does."""
    if hasattr(detokenizer, "trim_space"):  # SentencePiece
        detokenizer.trim_space = False
    elif hasattr(detokenizer, "_maybe_trim_space"):  # byte-level BPE: trims only at the start
        detokenizer._maybe_trim_space = _as_is


def _as_is(text: str) -> str:
    return text
