"""Completions out: output events to ``text_completion`` bodies and stream chunks."""

from __future__ import annotations

import time
from collections.abc import Sequence

from mlxd.http.dialects.openai.chat import FINGERPRINT, sse_frame, wire_usage
from mlxd.http.dialects.openai.logprobs import LogprobShape, LogprobsRenderer
from mlxd.http.ids import new_id
from mlxd.output.collect import ChoiceOutput
from mlxd.output.events import Event, Finish, TextDelta, TokenInfo, Usage
from mlxd.protocol.responses import AnyLogprobs, TextChoice, TextCompletion


class CompletionEncoder:
    """One text completion request's responses: the whole body, or its stream's frames.

    A text prompt has no chat template, so its output has no reasoning or tool calls:
    only text and the finish.
    """

    __slots__ = ("created", "echo", "id", "logprobs", "model")

    def __init__(self, model: str, logprobs: LogprobShape | None, echo: str = "") -> None:
        self.model = model
        self.logprobs = LogprobsRenderer(logprobs)
        self.echo = echo
        self.id = "cmpl-" + new_id()
        self.created = int(time.time())

    def response(self, outputs: Sequence[ChoiceOutput], usage: Usage) -> TextCompletion:
        """The non-streaming body, one choice per output."""
        choices = [
            TextChoice(i, self.echo + out.text, self.logprobs.render(out.tokens, i), out.finish.reason)
            for i, out in enumerate(outputs)
        ]
        return TextCompletion(
            self.id, self.created, self.model, choices, FINGERPRINT, usage=wire_usage(usage)
        )

    def opening(self, choices: int) -> bytes:
        """The first chunk of each choice: the echoed prompt, or empty text."""
        return b"".join(self._frame(i, self.echo, None, None) for i in range(choices))

    def frames(self, index: int, events: Sequence[Event]) -> bytes:
        """The chunks for one delivery of a choice's events."""
        text: list[str] = []
        tokens: list[TokenInfo] = []
        finish: str | None = None
        for event in events:
            if isinstance(event, TextDelta):
                text.append(event.text)
                if event.tokens:
                    tokens.extend(event.tokens)
            elif isinstance(event, Finish):
                finish = event.reason
        out = b""
        if text or tokens:
            logprobs = self.logprobs.render(tokens, index) if tokens else None
            out = self._frame(index, "".join(text), logprobs, None)
        if finish is not None:
            out += self._frame(index, "", None, finish)
        return out

    def usage_frame(self, usage: Usage) -> bytes:
        """The final usage-only chunk (``stream_options.include_usage``)."""
        body = TextCompletion(self.id, self.created, self.model, [], FINGERPRINT, usage=wire_usage(usage))
        return sse_frame(body)

    def _frame(self, index: int, text: str, logprobs: AnyLogprobs | None, finish: str | None) -> bytes:
        # finish_reason is null until the choice ends: see TextChoice on why.
        choice = TextChoice(index, text, logprobs, finish)
        return sse_frame(TextCompletion(self.id, self.created, self.model, [choice], FINGERPRINT))
