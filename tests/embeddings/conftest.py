"""What the embedding tests share: the openai client on each module's daemon, and its vectors."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from tests.conftest import RunningDaemon


@pytest.fixture(scope="module")
def oai(served: RunningDaemon) -> openai.OpenAI:
    """The openai client on the module's ``served`` daemon."""
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)


def vectors(reply: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    """A reply's vectors as rows, in input order."""
    return np.array([item.embedding for item in sorted(reply.data, key=lambda d: d.index)], dtype=np.float32)
