"""The official clients of each dialect, pointed at the real-MLX ``daemon`` (module fixtures)."""

from __future__ import annotations

import anthropic
import ollama
import openai
import pytest

from tests.conftest import RunningDaemon


@pytest.fixture(scope="module")
def oai(daemon: RunningDaemon) -> openai.OpenAI:
    """OpenAI's client, validating every response strictly against its own types."""
    return openai.OpenAI(
        base_url=daemon.url + "/v1", api_key="unused", max_retries=0, _strict_response_validation=True
    )


@pytest.fixture(scope="module")
def claude(daemon: RunningDaemon) -> anthropic.Anthropic:
    """Anthropic's client (it appends ``/v1/messages`` to the base URL itself)."""
    return anthropic.Anthropic(
        base_url=daemon.url, api_key="unused", max_retries=0, _strict_response_validation=True
    )


@pytest.fixture(scope="module")
def llama(daemon: RunningDaemon) -> ollama.Client:
    """Ollama's client, as its users make one."""
    return ollama.Client(host=daemon.url)
