"""``chat_template_kwargs.add_generation_prompt`` (documented as allowed) reaches the template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import RunningDaemon

pytestmark = [pytest.mark.mlx, pytest.mark.server]


def prompt_tokens(daemon: RunningDaemon, extra: dict[str, Any] | None) -> int:
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=2,
        temperature=0,
        extra_body=extra,
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 2
    return reply.usage.prompt_tokens


def test_add_generation_prompt_is_honoured(daemon: RunningDaemon, tiny_model_dir: Path) -> None:
    from tokenizers import Tokenizer

    default = prompt_tokens(daemon, None)
    opened = prompt_tokens(daemon, {"chat_template_kwargs": {"add_generation_prompt": True}})
    closed = prompt_tokens(daemon, {"chat_template_kwargs": {"add_generation_prompt": False}})
    assert opened == default  # the assistant's turn is opened by default
    # The tiny model's template opens it with exactly this text.
    opening = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")).encode(
        "<|im_start|>assistant\n", add_special_tokens=False
    )
    assert default - closed == len(opening.ids)
