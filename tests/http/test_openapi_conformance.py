"""Every response and stream chunk of every OpenAI route validates against OpenAI's own schemas.

Two checks, both strict: each body and chunk against the component schemas of OpenAI's
published OpenAPI document (``tests/http/openai_spec.py`` says which version), and the
official ``openai`` client with ``_strict_response_validation=True``, which parses every
object with the SDK's own types instead of accepting whatever arrives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import RunningDaemon, serving
from tests.http.openai_spec import validator, with_nullable_completion_finish
from tests.http.test_structured_output import WEATHER

pytestmark = [pytest.mark.mlx, pytest.mark.server]

REPO = "mlx-community/Qwen2.5-0.5B-Instruct-4bit"
HELLO = [{"role": "user", "content": "Hello"}]
CHAT = validator("CreateChatCompletionResponse")
CHAT_CHUNK = validator("CreateChatCompletionStreamResponse")
COMPLETION = validator("CreateCompletionResponse")
COMPLETION_CHUNK = validator("CreateCompletionResponse", with_nullable_completion_finish())
MODELS = validator("ListModelsResponse")
MODEL = validator("Model")
ERROR = validator("ErrorResponse")


@pytest.fixture(scope="module")
def served(
    tiny_model_dir: Path, thinking_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    with serving(
        tmp_path_factory.mktemp("conformance"),
        f"""
[server]
port = 0
[runtime]
keep_alive = "forever"
[defaults]
temperature = 0.0
max_tokens = 8
[models.tiny]
model = "{tiny_model_dir}"
default = true
[models.thinker]
model = "{thinking_model_dir}"
[models.qwen]
model = "{REPO}"
aliases = ["gpt-4o-mini"]
""",
    ) as running:
        yield running


def check(schema: Any, body: Any) -> None:
    errors = [f"{e.instance_path}: {e.message}" for e in schema.iter_errors(body)]
    assert not errors, (errors, body)


def chunks(response: httpx.Response) -> list[dict[str, Any]]:
    """The ``data:`` events of an SSE body, which must end with ``[DONE]``."""
    assert response.status_code == 200, response.text
    events = [line[len("data: ") :] for line in response.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(event) for event in events[:-1]]


CHAT_BODIES: list[dict[str, Any]] = [
    {"messages": HELLO},
    {"messages": HELLO, "logprobs": True, "top_logprobs": 2},
    {"messages": HELLO, "n": 2, "temperature": 0.9, "seed": 1},
    {"messages": HELLO, "tools": [WEATHER], "tool_choice": "required", "max_tokens": 60},
    {"messages": HELLO, "tools": [WEATHER], "max_tokens": 4},
    {"model": "thinker", "messages": HELLO, "max_tokens": 12},
    {"messages": HELLO, "response_format": {"type": "json_object"}, "max_tokens": 12},
]
CHAT_IDS = ["plain", "logprobs", "n=2", "forced-tool", "tools-offered", "reasoning", "json"]


@pytest.mark.parametrize("body", CHAT_BODIES, ids=CHAT_IDS)
def test_chat_completions(served: RunningDaemon, body: dict[str, Any]) -> None:
    with served.client() as http:
        whole = http.post("/v1/chat/completions", json=body)
        assert whole.status_code == 200, whole.text
        check(CHAT, whole.json())
        assert all(choice["message"]["refusal"] is None for choice in whole.json()["choices"])
        for include_usage in (False, True):
            stream = {**body, "stream": True, "stream_options": {"include_usage": include_usage}}
            events = chunks(http.post("/v1/chat/completions", json=stream))
            for chunk in events:
                check(CHAT_CHUNK, chunk)
            with_usage = [chunk for chunk in events if "usage" in chunk]
            assert len(with_usage) == (1 if include_usage else 0)
            assert not include_usage or (events[-1] is with_usage[0] and events[-1]["choices"] == [])


COMPLETION_BODIES: list[dict[str, Any]] = [
    {"prompt": "Once"},
    {"prompt": "Once", "logprobs": 2},
    {"prompt": "Once", "n": 2, "temperature": 0.9, "seed": 2},
    {"prompt": "Once", "echo": True},
    {"prompt": [5, 6, 7]},
]


@pytest.mark.parametrize("body", COMPLETION_BODIES, ids=["plain", "logprobs", "n=2", "echo", "tokens"])
def test_completions(served: RunningDaemon, body: dict[str, Any]) -> None:
    with served.client() as http:
        whole = http.post("/v1/completions", json=body)
        assert whole.status_code == 200, whole.text
        check(COMPLETION, whole.json())
        for include_usage in (False, True):
            stream = {**body, "stream": True, "stream_options": {"include_usage": include_usage}}
            events = chunks(http.post("/v1/completions", json=stream))
            finished: dict[int, str] = {}
            for chunk in events:
                check(COMPLETION_CHUNK, chunk)
                for choice in chunk["choices"]:
                    if choice["finish_reason"] is not None:
                        finished[choice["index"]] = choice["finish_reason"]
            # The exemption is only for chunks that do not end their choice: every choice ends
            # with a real finish reason.
            assert sorted(finished) == list(range(body.get("n", 1)))
            assert ("usage" in events[-1]) == include_usage
            assert sum("usage" in chunk for chunk in events) == int(include_usage)


def test_models(served: RunningDaemon) -> None:
    with served.client() as http:
        listed = http.get("/v1/models").json()
        check(MODELS, listed)
        for card in listed["data"]:
            check(MODEL, http.get(f"/v1/models/{card['id']}").json())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", {"messages": []}),
        ("POST", "/v1/chat/completions", {"messages": HELLO, "model": "nope"}),
        ("POST", "/v1/completions", {"prompt": "x", "max_tokens": "8"}),
        ("POST", "/v1/completions", None),
        ("GET", "/v1/models/nope", None),
        ("GET", "/v1/chat/completions", None),
        ("GET", "/v1/nothing", None),
    ],
)
def test_errors(served: RunningDaemon, method: str, path: str, body: Any) -> None:
    with served.client() as http:
        response = http.request(method, path, json=body) if body is not None else http.request(method, path)
    assert response.status_code >= 400
    check(ERROR, response.json())


def strict_client(daemon: RunningDaemon) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=daemon.url + "/v1", api_key="x", max_retries=0, _strict_response_validation=True
    )


def test_the_strict_sdk_parses_everything(served: RunningDaemon) -> None:
    client = strict_client(served)
    for body in CHAT_BODIES:
        kwargs = {"model": "tiny", **body}
        reply = client.chat.completions.create(**kwargs)
        assert reply.choices
        streamed = list(
            client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
        )
        assert streamed[-1].usage is not None
        assert all(chunk.usage is None for chunk in streamed[:-1])
    for body in COMPLETION_BODIES:
        completion = client.completions.create(model="tiny", **body)
        assert completion.usage is not None
    # (Completion streams are outside this check: their unfinished chunks carry a null
    # finish_reason, which the SDK's types, like the document, do not admit.)
    assert {m.id for m in client.models.list()} == {"tiny", "thinker", "qwen", "gpt-4o-mini"}


@pytest.mark.parametrize("name", [REPO, "qwen", "gpt-4o-mini", "tiny"])
def test_models_retrieve_takes_every_name_a_request_may_use(served: RunningDaemon, name: str) -> None:
    """``models.retrieve(repo_id)`` in the SDK sends the ``/`` percent-encoded."""
    model = strict_client(served).models.retrieve(name)
    assert model.id == name
    assert model.owned_by == "mlxd"
    with served.client() as http:
        raw = http.get(f"/v1/models/{name}")  # the ``/`` as it is
        assert raw.status_code == 200
        assert raw.json()["id"] == name
        encoded = http.get("/v1/models/" + name.replace("/", "%2F"))
        assert encoded.json() == raw.json()
        assert http.get(f"/v1/models/{name}x").status_code == 404
        assert http.get("/health").status_code == 200
