"""Token logprobs in the three shapes an OpenAI-style request can ask for."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from mlxd.output.events import TokenInfo
from mlxd.protocol.responses import (
    AnyLogprobs,
    ChatLogprobs,
    LegacyLogprobs,
    SeedLogprobs,
    SeedTopLogprob,
    TokenLogprob,
    TopLogprob,
)

#: ``openai``: chat's ``logprobs: true``; ``seed``: mlx_lm.server's integer ``logprobs``;
#: ``legacy``: text completions.
LogprobShape = Literal["openai", "seed", "legacy"]


class LogprobsRenderer:
    """Renders tokens in one request's shape; legacy offsets run on per choice."""

    __slots__ = ("_offsets", "shape")

    def __init__(self, shape: LogprobShape | None) -> None:
        self.shape = shape
        self._offsets: dict[int, int] = {}

    def render(self, tokens: Sequence[TokenInfo], index: int = 0) -> AnyLogprobs | None:
        """The logprobs of some tokens of choice ``index``, or None when none were asked for."""
        if self.shape is None:
            return None
        if self.shape == "openai":
            return ChatLogprobs(
                [
                    TokenLogprob(
                        t.text, t.logprob, list(t.raw), [TopLogprob(s, v, list(r)) for _, s, r, v in t.top]
                    )
                    for t in tokens
                ]
            )
        if self.shape == "seed":
            return SeedLogprobs(
                token_logprobs=[t.logprob for t in tokens],
                tokens=[t.id for t in tokens],
                top_logprobs=[[SeedTopLogprob(i, s, v) for i, s, _, v in t.top] for t in tokens],
            )
        offsets = []
        offset = self._offsets.get(index, 0)
        for t in tokens:
            offsets.append(offset)
            offset += len(t.text)
        self._offsets[index] = offset
        return LegacyLogprobs(
            tokens=[t.text for t in tokens],
            token_logprobs=[t.logprob for t in tokens],
            top_logprobs=[{s: v for _, s, _, v in t.top} for t in tokens],
            text_offset=offsets,
            token_ids=[t.id for t in tokens],
        )
