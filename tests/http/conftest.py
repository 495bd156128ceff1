"""The official OpenAI clients pointed at the real-MLX ``daemon`` (module fixtures)."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import RunningDaemon

#: A first message for requests whose content does not matter.
HELLO = [{"role": "user", "content": "Say this is a test!"}]


@pytest.fixture(scope="module")
def client(daemon: RunningDaemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def aclient(daemon: RunningDaemon) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)
