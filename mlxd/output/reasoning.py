"""Split a reasoning model's thinking from its answer (pure Python, streaming-safe).

Thinking sits between the model's tags (``<think>`` … ``</think>``). Many templates
open the block themselves at the end of the prompt, so generation starts inside it;
otherwise a block counts only when the output opens with the start tag.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlxd.output.stops import partial_suffix


@dataclass(frozen=True, slots=True)
class ReasoningFormat:
    """A model's thinking tags, and whether the prompt already opened the block."""

    start: str
    end: str
    starts_inside: bool


class ReasoningSplitter:
    """Feed generated text; get back ``(reasoning, content)`` that is safe to emit now."""

    def __init__(self, fmt: ReasoningFormat) -> None:
        self.fmt = fmt
        self._state = "inside" if fmt.starts_inside else "opening"
        self._buffer = ""

    def feed(self, text: str) -> tuple[str, str]:
        """The reasoning and the content completed by this piece of text."""
        self._buffer += text
        reasoning = content = ""
        if self._state == "opening":
            head = self._buffer.lstrip()
            if head.startswith(self.fmt.start):
                self._buffer = head[len(self.fmt.start) :]
                self._state = "inside"
            elif self.fmt.start.startswith(head):
                return "", ""  # could still become the start tag
            else:
                self._state = "content"
        if self._state == "inside":
            at = self._buffer.find(self.fmt.end)
            if at == -1:
                keep = partial_suffix(self._buffer, self.fmt.end)
                reasoning = self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(self._buffer) - keep :]
                return reasoning, ""
            reasoning = self._buffer[:at]
            self._buffer = self._buffer[at + len(self.fmt.end) :]
            self._state = "answer"
        if self._state == "answer":
            # The blank lines between the thinking and the answer belong to neither.
            self._buffer = self._buffer.lstrip("\n")
            if not self._buffer:
                return reasoning, ""
            self._state = "content"
        content, self._buffer = self._buffer, ""
        return reasoning, content

    def flush(self) -> tuple[str, str]:
        """What is still held when generation ends."""
        rest, self._buffer = self._buffer, ""
        return (rest, "") if self._state == "inside" else ("", rest)


def split_reasoning(fmt: ReasoningFormat, text: str) -> tuple[str, str]:
    """``(reasoning, content)`` of a whole generation."""
    splitter = ReasoningSplitter(fmt)
    reasoning, content = splitter.feed(text)
    more_reasoning, more_content = splitter.flush()
    return reasoning + more_reasoning, content + more_content
