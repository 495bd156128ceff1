"""``server.stream_interval``: tokens decoded between two chunks go out together.

A real daemon on the tiny model with an interval far longer than the whole generation:
the first token goes out at once, everything after it waits for the end, and the text
is the same as without streaming.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import RunningDaemon, serving

pytestmark = [pytest.mark.mlx, pytest.mark.server]

HELLO = [{"role": "user", "content": "Say this is a test!"}]


@pytest.fixture(scope="module")
def slow_pace(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("pacing")
    with serving(
        root,
        f"""
[server]
port = 0
stream_interval = "1s"

[defaults]
temperature = 0.0

[models.tiny]
model = "{tiny_model_dir}"
""",
    ) as running:
        yield running


def test_a_long_interval_holds_back_all_but_the_first_token_and_the_end(slow_pace: RunningDaemon) -> None:
    client = openai.OpenAI(base_url=slow_pace.url + "/v1", api_key="unused", max_retries=0)
    whole = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=48)
    assert whole.usage is not None
    assert whole.usage.completion_tokens == 48
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=HELLO,
            max_tokens=48,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    # 48 tokens take well under the 1 s interval: the first token, then the rest at the end.
    assert 1 <= len(content) <= 2
    assert "".join(content) == whole.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 48
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]


def test_streams_sharing_a_batch_are_paced_each(slow_pace: RunningDaemon) -> None:
    client = openai.AsyncOpenAI(base_url=slow_pace.url + "/v1", api_key="unused", max_retries=0)

    async def one(i: int) -> list[str]:
        stream = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"Story {i}"}], max_tokens=48, stream=True
        )
        return [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]

    async def run() -> list[list[str]]:
        return list(await asyncio.gather(*(one(i) for i in range(4))))

    for content in asyncio.run(run()):
        assert 1 <= len(content) <= 2
        assert len("".join(content)) > 0


def test_the_interval_takes_durations_and_is_bounded() -> None:
    from pydantic import ValidationError

    from mlxd.config.sections import ServerConfig

    assert ServerConfig(stream_interval="10ms").stream_interval == pytest.approx(0.01)
    assert ServerConfig(stream_interval=0).stream_interval == 0
    for bad in ("5s", -1, "soon"):
        with pytest.raises(ValidationError, match="stream_interval"):
            ServerConfig(stream_interval=bad)
