"""Embeddings through the official clients on real MLX: ``/v1/embeddings`` (openai's
``embeddings.create``, float and base64, ``dimensions``), Ollama's ``embed`` and
``embeddings``, pooling from the model's own files and from the alias, and the bad
inputs of the issue, each a 400 after which the daemon keeps serving."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import pytest

from tests.conftest import RunningDaemon, serving
from tests.embeddings.conftest import vectors as _vectors

pytestmark = [pytest.mark.mlx, pytest.mark.server]


@pytest.fixture(scope="module")
def embedding_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlxd.runtime.demo_embedders import build_embedding_model

    return build_embedding_model(tmp_path_factory.mktemp("models") / "embed")


@pytest.fixture(scope="module")
def served(
    embedding_model_dir: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    config = f"""
[server]
port = 0

[runtime]
keep_alive = "forever"
max_batch_size = 8

[limits]
max_embedding_inputs = 300

[defaults]
temperature = 0.0

[models.embed]
model = "{embedding_model_dir}"
default = true

[models.embed-mean]
model = "{embedding_model_dir}"
pooling = "mean"
normalize = false

[models.tiny]
model = "{tiny_model_dir}"
"""
    with serving(tmp_path_factory.mktemp("embed-daemon"), config) as running:
        yield running


TEXTS = [f"the quick brown fox {i} " * (1 + i % 4) for i in range(12)]


def test_float_and_base64_are_the_same_unit_vectors(oai: openai.OpenAI) -> None:
    floats = oai.embeddings.create(model="embed", input=TEXTS, encoding_format="float")
    assert floats.model == "embed"
    assert [d.index for d in floats.data] == list(range(len(TEXTS)))
    vectors = _vectors(floats)
    assert vectors.shape == (len(TEXTS), 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # the model's Normalize module
    assert floats.usage.prompt_tokens > len(TEXTS)
    assert floats.usage.total_tokens == floats.usage.prompt_tokens
    # The client asks for base64 on its own and decodes it.
    encoded = oai.embeddings.create(model="embed", input=TEXTS)
    assert np.array_equal(_vectors(encoded), vectors)
    raw = oai.embeddings.with_raw_response.create(model="embed", input="hi", encoding_format="base64")
    payload = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(payload, str)
    assert np.frombuffer(base64.b64decode(payload), dtype="<f4").shape == (64,)


def test_batched_equals_one_at_a_time(served: RunningDaemon, oai: openai.OpenAI) -> None:
    before = served.status()
    batched = _vectors(oai.embeddings.create(model="embed", input=TEXTS, encoding_format="float"))
    for i, text in enumerate(TEXTS[:6]):
        alone = _vectors(oai.embeddings.create(model="embed", input=text, encoding_format="float"))
        assert np.allclose(alone[0], batched[i], atol=1e-5)
    assert not np.allclose(batched[0], batched[1], atol=1e-3)  # different texts, different vectors
    # The twelve ran in one batch, then six batches of one: the status counts both.
    after = served.status()
    assert int(after["embedded_inputs"]) - int(before["embedded_inputs"]) == 18  # type: ignore[call-overload]
    assert int(after["embedding_batches"]) - int(before["embedding_batches"]) == 7  # type: ignore[call-overload]
    with served.client() as http:
        metrics = http.get("/metrics").text
    assert f"mlxd_embedded_inputs_total {float(after['embedded_inputs'])}" in metrics  # type: ignore[arg-type]


def test_dimensions_truncate_then_renormalize(oai: openai.OpenAI) -> None:
    full = _vectors(oai.embeddings.create(model="embed", input=TEXTS[:3], encoding_format="float"))
    short = _vectors(
        oai.embeddings.create(model="embed", input=TEXTS[:3], dimensions=16, encoding_format="float")
    )
    assert short.shape == (3, 16)
    expected = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    assert np.allclose(short, expected, atol=1e-5)


def test_token_ids_and_lists_of_them(oai: openai.OpenAI) -> None:
    one = oai.embeddings.create(model="embed", input=[5, 6, 7, 8], encoding_format="float")
    many = oai.embeddings.create(model="embed", input=[[5, 6, 7, 8], [9, 10]], encoding_format="float")
    assert one.usage.prompt_tokens == 4
    assert many.usage.prompt_tokens == 6
    assert np.allclose(_vectors(one)[0], _vectors(many)[0], atol=1e-5)


def test_the_alias_overrides_pooling_and_normalization(oai: openai.OpenAI) -> None:
    last = _vectors(oai.embeddings.create(model="embed", input=TEXTS[:2], encoding_format="float"))
    mean = _vectors(oai.embeddings.create(model="embed-mean", input=TEXTS[:2], encoding_format="float"))
    assert not np.allclose(last, mean, atol=1e-3)
    assert not np.allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-3)  # normalize = false


def test_a_decoder_chat_model_embeds_with_its_last_token(oai: openai.OpenAI) -> None:
    reply = oai.embeddings.create(model="tiny", input=["hello", "world"], encoding_format="float")
    assert _vectors(reply).shape == (2, 64)


def test_ollama_embed_and_embeddings(served: RunningDaemon, oai: openai.OpenAI) -> None:
    client = ollama.Client(host=served.url)
    reply = client.embed(model="embed", input=TEXTS[:4])
    assert len(reply.embeddings) == 4
    assert reply.prompt_eval_count
    expected = _vectors(oai.embeddings.create(model="embed", input=TEXTS[:4], encoding_format="float"))
    assert np.allclose(np.array(reply.embeddings), expected, atol=1e-5)
    legacy = client.embeddings(model="embed:latest", prompt=TEXTS[0])
    assert np.allclose(np.array(legacy.embedding), expected[0], atol=1e-5)
    shown = client.show("embed").modelinfo or {}
    assert shown["qwen3.embedding_length"] == len(reply.embeddings[0])  # where apps read a vector's length
    # truncate (Ollama's default) cuts an over-long input to the context instead of refusing it
    long = "word " * 5000
    assert len(client.embed(model="embed", input=long).embeddings) == 1
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(model="embed", input=long, truncate=False)
    assert refused.value.status_code == 400


def test_a_burst_runs_beside_an_open_stream(oai: openai.OpenAI) -> None:
    """256 inputs while a stream decodes: both finish, and the stream's tokens all arrive."""
    burst: list[int] = []

    def embed() -> None:
        reply = oai.embeddings.create(model="tiny", input=TEXTS * 21 + TEXTS[:4], encoding_format="float")
        burst.append(len(reply.data))

    stream = oai.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=40, stream=True
    )
    thread = threading.Thread(target=embed)
    thread.start()
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    thread.join(60)
    assert burst == [256]
    assert text


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input[0]"),
        ({"input": ["ok", ""]}, "input[1]"),
        ({"input": "word " * 5000}, "input[0]"),
        ({"input": ["x"] * 10_000}, "input"),
        ({"input": [[1, 2, 10**6]]}, "input[0]"),
        ({"input": [[-1, 2]]}, "input[0]"),
        ({"input": [["a", 1]]}, "input[0]"),
        ({"input": "hi", "dimensions": 65}, "dimensions"),
        ({"input": "hi", "dimensions": 0}, "dimensions"),
        ({"input": "hi", "encoding_format": "int8"}, "encoding_format"),
    ],
)
def test_bad_input_is_a_400_and_the_daemon_keeps_serving(
    served: RunningDaemon, oai: openai.OpenAI, body: dict[str, object], param: str
) -> None:
    with served.client() as http:
        reply = http.post("/v1/embeddings", json={"model": "embed", **body})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert param in (error["param"] or "")
        assert http.get("/health").status_code == 200
    assert len(oai.embeddings.create(model="embed", input="still here").data) == 1


def test_null_options_take_their_defaults(served: RunningDaemon) -> None:
    body = {"model": "embed", "input": "hi", "encoding_format": None, "dimensions": None, "user": None}
    with served.client() as http:
        reply = http.post("/v1/embeddings", json=body)
    assert reply.status_code == 200, reply.text
    assert isinstance(reply.json()["data"][0]["embedding"], list)  # float


def test_ollamas_empty_input_loads_the_model_as_ollama_does(served: RunningDaemon) -> None:
    """Apps warm an embedding model with an empty request; keep_alive 0 unloads it."""
    client = ollama.Client(host=served.url)

    def loaded() -> set[str]:
        return {m.model for m in client.ps().models}

    assert client.embed(model="embed-mean", input=[], keep_alive=0).embeddings == []
    assert "embed-mean" not in loaded()
    assert client.embed(model="embed-mean", input="").embeddings == []
    assert "embed-mean" in loaded()
    assert client.embeddings(model="embed-mean", prompt="", keep_alive=0).embedding == []
    assert "embed-mean" not in loaded()
    with served.client() as http:
        assert http.post("/api/embed", json={"model": "nope", "input": []}).status_code == 404


def test_unknown_model_is_a_404(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="nope", input="hi")


def test_an_image_for_a_text_model_is_a_400_naming_the_alias(served: RunningDaemon) -> None:
    from tests.images.pictures import data_url, png

    with served.client() as http:
        reply = http.post(
            "/v1/chat/completions",
            json={
                "model": "tiny",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image_url", "image_url": {"url": data_url(png(8, 8))}},
                        ],
                    }
                ],
            },
        )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert "'tiny'" in error["message"]
    assert "text model" in error["message"]
    assert error["param"] == "messages[0].content[1]"
    assert httpx.get(served.url + "/health").status_code == 200
