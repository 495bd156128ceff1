"""Prompt cache: a multi-turn chat reuses the KV of its history, and outputs do not change."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import RunningDaemon, start_daemon, stop_daemon, write_config

pytestmark = [pytest.mark.mlx, pytest.mark.server]

STORY = " ".join(f"Sentence number {i} tells a little more of the story." for i in range(40))


def _daemon(model: Path, root: Path, cache: str) -> tuple[RunningDaemon, object]:
    config = write_config(
        root / "mlxd.toml",
        f'[server]\nport = 0\n[runtime]\nprompt_cache_bytes = "{cache}"\n'
        f'[defaults]\ntemperature = 0.0\nmax_tokens = 12\n[models.tiny]\nmodel = "{model}"\n',
    )
    return start_daemon(config)


@pytest.fixture(scope="module")
def pair(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[openai.OpenAI, openai.OpenAI]]:
    cached, cached_thread = _daemon(tiny_model_dir, tmp_path_factory.mktemp("cache-on"), "1GB")
    plain, plain_thread = _daemon(tiny_model_dir, tmp_path_factory.mktemp("cache-off"), "0")
    yield (
        openai.OpenAI(base_url=cached.url + "/v1", api_key="x", max_retries=0),
        openai.OpenAI(base_url=plain.url + "/v1", api_key="x", max_retries=0),
    )
    stop_daemon(cached, cached_thread)  # type: ignore[arg-type]
    stop_daemon(plain, plain_thread)  # type: ignore[arg-type]


def test_multi_turn_chat_hits_the_cache_with_identical_output(
    pair: tuple[openai.OpenAI, openai.OpenAI],
) -> None:
    cached, plain = pair
    messages: list[dict[str, str]] = [{"role": "user", "content": STORY}]
    for turn in range(4):
        on = cached.chat.completions.create(model="tiny", messages=messages)  # type: ignore[arg-type]
        off = plain.chat.completions.create(model="tiny", messages=messages)  # type: ignore[arg-type]
        assert on.choices[0].message.content == off.choices[0].message.content
        assert on.usage is not None
        assert off.usage is not None
        assert on.usage.prompt_tokens == off.usage.prompt_tokens
        assert off.usage.prompt_tokens_details is not None
        assert off.usage.prompt_tokens_details.cached_tokens == 0
        details = on.usage.prompt_tokens_details
        assert details is not None
        if turn == 0:
            assert details.cached_tokens == 0
        else:
            # The whole earlier conversation (hundreds of tokens) came from the cache.
            assert details.cached_tokens > 300
            assert details.cached_tokens < on.usage.prompt_tokens
        messages += [
            {"role": "assistant", "content": on.choices[0].message.content or ""},
            {"role": "user", "content": f"Go on with part {turn}."},
        ]


def test_a_short_first_turn_is_reused_by_the_second(pair: tuple[openai.OpenAI, openai.OpenAI]) -> None:
    cached, plain = pair
    messages: list[dict[str, str]] = [{"role": "user", "content": "Hi there!"}]
    first = cached.chat.completions.create(model="tiny", messages=messages)  # type: ignore[arg-type]
    assert first.usage is not None
    assert first.usage.prompt_tokens < 64  # shorter than a batch's threshold for keeping it
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content or ""},
        {"role": "user", "content": "And then?"},
    ]
    second = cached.chat.completions.create(model="tiny", messages=messages)  # type: ignore[arg-type]
    again = plain.chat.completions.create(model="tiny", messages=messages)  # type: ignore[arg-type]
    assert second.choices[0].message.content == again.choices[0].message.content
    assert second.usage is not None
    assert second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


def test_a_new_conversation_reuses_the_templates_opening(pair: tuple[openai.OpenAI, openai.OpenAI]) -> None:
    cached, plain = pair
    for text in ("Tell me about owls.", "What is the capital of a made-up country?"):
        messages = [{"role": "user", "content": text}]
        on = cached.chat.completions.create(model="tiny", messages=messages)  # type: ignore[arg-type]
        off = plain.chat.completions.create(model="tiny", messages=messages)  # type: ignore[arg-type]
        assert on.choices[0].message.content == off.choices[0].message.content
    assert on.usage is not None
    assert on.usage.prompt_tokens_details is not None
    # Only the chat template's opening ("<|im_start|>user\n" and the like) is shared.
    assert 4 <= on.usage.prompt_tokens_details.cached_tokens < 16


def test_a_shared_prefix_serves_different_continuations(pair: tuple[openai.OpenAI, openai.OpenAI]) -> None:
    cached, plain = pair
    for i, ending in enumerate(("first ending", "second ending", "first ending")):
        prompt = STORY + " " + ending
        on = cached.completions.create(model="tiny", prompt=prompt)
        off = plain.completions.create(model="tiny", prompt=prompt)
        assert on.choices[0].text == off.choices[0].text
        assert on.usage is not None
        assert on.usage.prompt_tokens_details is not None
        if i > 0:
            assert on.usage.prompt_tokens_details.cached_tokens > 300


def test_cached_prompts_hold_only_their_own_bytes(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Regression: an entry extracted from a batch once kept the whole batch's KV alive."""
    import asyncio

    import httpx

    running, thread = _daemon(tiny_model_dir, tmp_path, "64MB")
    try:

        async def burst(round_: int) -> None:
            async with httpx.AsyncClient(base_url=running.url, timeout=120) as http:
                await asyncio.gather(
                    *[
                        http.post(
                            "/v1/completions",
                            json={"model": "tiny", "prompt": f"{STORY} {round_} {i}", "max_tokens": 40},
                        )
                        for i in range(8)
                    ]
                )

        def settled() -> tuple[int, int, int]:
            """(live MLX bytes, prompt-cache bytes, entries) once the worker is at rest.

            MLX counts memory per process, and other test daemons may share this one:
            only differences between two readings are this daemon's doing."""
            readings = []
            for _ in range(3):
                # The worker measures the moment it goes idle (before the last response
                # reaches the client), then once a second: readings a beat apart suffice.
                time.sleep(0.3)
                memory = running.status()["memory"]
                readings.append(
                    (memory["mlx_active_bytes"], memory["prompt_cache_bytes"], memory["prompt_cache_entries"])
                )  # type: ignore[index]
            return min(readings)

        asyncio.run(burst(0))
        before = settled()
        for round_ in range(1, 5):
            asyncio.run(burst(round_))
        after = settled()
        grown_live, grown_cache = after[0] - before[0], after[1] - before[1]
        assert after[2] >= 16
        assert grown_cache > 0
        # Live arrays grow by the cached prompts' own bytes, nothing more (the bug also
        # kept each finished batch's whole KV buffer: ~70% more here, steadily).
        assert grown_live <= 1.1 * grown_cache + 2**20
    finally:
        stop_daemon(running, thread)  # type: ignore[arg-type]
