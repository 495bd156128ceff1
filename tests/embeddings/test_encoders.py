"""Encoder embedding models (BERT, XLM-RoBERTa, ModernBERT) through mlx-embeddings, the
``mlxd[embeddings]`` extra, on the real path: tiny random-weight models built here (config,
safetensors, a WordPiece tokenizer, sentence-transformers files), a real daemon, the openai
and ollama clients. The oracle is mlx-embeddings itself: its own forward pass and its own
mean pooling (``text_embeds``), one input at a time, against mlxd's batched vectors."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import ollama
import openai
import pytest

from tests.conftest import RunningDaemon, serving
from tests.embeddings.conftest import vectors as _vectors

pytestmark = [pytest.mark.mlx, pytest.mark.server]

FAMILIES = ("bert", "xlm-roberta", "modernbert")
# Lengths from 3 to about 40 tokens, so a batch pads most of its rows.
TEXTS = [("the small daemon wakes up " * (1 + i % 5)) + f"unwrapped {i}" for i in range(10)]


@pytest.fixture(scope="module")
def encoder_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mlxd.runtime.demo_embedders import build_encoder_model

    root = tmp_path_factory.mktemp("encoders")
    return {family: build_encoder_model(root / family, family=family) for family in FAMILIES}


@pytest.fixture(scope="module")
def served(
    encoder_dirs: dict[str, Path], tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    aliases = "".join(f'\n[models.{family}]\nmodel = "{path}"\n' for family, path in encoder_dirs.items())
    config = f"""
[server]
port = 0

[runtime]
keep_alive = "forever"
prefill_step_size = 64  # while a stream decodes, no embedding batch exceeds it

[models.chat]
model = "{tiny_model_dir}"

[models.bert-cls]
model = "{encoder_dirs["bert"]}"
pooling = "cls"
{aliases}"""
    with serving(tmp_path_factory.mktemp("encoder-daemon"), config) as running:
        yield running


def _oracle(path: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """mlx-embeddings' own vectors, one input at a time: its mean-pooled, normalized
    ``text_embeds``, its first token's states (for CLS pooling), and the tokens it read."""
    import mlx.core as mx
    from mlx_embeddings.utils import load

    model, tokenizer = load(str(path))
    means, firsts, tokens = [], [], 0
    for text in texts:
        ids = tokenizer.encode(text)
        tokens += len(ids)
        out = model(mx.array([ids]))
        means.append(np.array(out.text_embeds[0]))
        if out.last_hidden_state.ndim == 3:  # ModernBERT's head already pooled it
            firsts.append(np.array(out.last_hidden_state[0, 0]))
    return np.stack(means), np.stack(firsts) if firsts else np.empty(0), tokens


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_vectors_equal_mlx_embeddings_one_at_a_time(
    oai: openai.OpenAI, encoder_dirs: dict[str, Path], family: str
) -> None:
    reply = oai.embeddings.create(model=family, input=TEXTS)
    vectors = _vectors(reply)
    expected, _, tokens = _oracle(encoder_dirs[family], TEXTS)
    assert vectors.shape == (len(TEXTS), 64)
    assert np.abs(vectors - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # the Normalize module
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)
    alone = _vectors(oai.embeddings.create(model=family, input=TEXTS[3], encoding_format="float"))
    assert np.abs(alone[0] - vectors[3]).max() < 1e-5
    assert reply.usage.prompt_tokens == tokens  # [CLS] and [SEP] included


def test_the_alias_overrides_the_model_pooling(oai: openai.OpenAI, encoder_dirs: dict[str, Path]) -> None:
    vectors = _vectors(oai.embeddings.create(model="bert-cls", input=TEXTS[:3]))
    _, firsts, _ = _oracle(encoder_dirs["bert"], TEXTS[:3])
    expected = firsts / np.linalg.norm(firsts, axis=1, keepdims=True)
    assert np.abs(vectors - expected).max() < 1e-5


def test_ollama_embed_gives_the_same_vectors(served: RunningDaemon, oai: openai.OpenAI) -> None:
    reply = ollama.Client(host=served.url).embed(model="bert", input=TEXTS[:4])
    expected = _vectors(oai.embeddings.create(model="bert", input=TEXTS[:4]))
    assert np.allclose(np.array(reply.embeddings), expected, atol=1e-6)
    assert reply.prompt_eval_count


def test_ollama_truncates_as_sentence_transformers_does(
    served: RunningDaemon, oai: openai.OpenAI, encoder_dirs: dict[str, Path]
) -> None:
    """An input over the context is cut from the end of its text and keeps its closing
    ``[SEP]``, as the Hugging Face tokenizer truncates for sentence-transformers."""
    from transformers import AutoTokenizer

    text = "the small daemon wakes up " * 150
    cut = AutoTokenizer.from_pretrained(encoder_dirs["bert"])(text, truncation=True, max_length=512)[
        "input_ids"
    ]
    assert len(cut) == 512
    reply = ollama.Client(host=served.url).embed(model="bert", input=text)
    expected = _vectors(oai.embeddings.create(model="bert", input=[cut]))
    assert np.allclose(np.array(reply.embeddings), expected, atol=1e-6)
    assert reply.prompt_eval_count == 512


def test_generation_is_a_400_naming_the_alias(served: RunningDaemon, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai.chat.completions.create(model="bert", messages=[{"role": "user", "content": "Hi"}])
    assert "'bert' is an embedding model" in refused.value.message
    with pytest.raises(ollama.ResponseError) as ollama_refused:
        ollama.Client(host=served.url).generate(model="modernbert", prompt="Hi")
    assert ollama_refused.value.status_code == 400
    assert "'modernbert' is an embedding model" in str(ollama_refused.value)
    with served.client() as http:
        assert http.get("/health").status_code == 200
    assert len(oai.embeddings.create(model="bert", input="still here").data) == 1


def test_listings_say_embedding_not_completion(served: RunningDaemon) -> None:
    with served.client() as http:
        card = http.get("/v1/models/xlm-roberta").json()
        show = http.post("/api/show", json={"model": "bert"}).json()
    assert card["capabilities"] == ["embedding"]
    assert show["capabilities"] == ["embedding"]


def test_without_the_extra_the_load_error_says_how_to_get_it(
    encoder_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlxd.errors import ModelUnsupportedError
    from mlxd.runtime.mlx.loading import load_base

    # None in sys.modules makes the import fail, as it does where the extra is not installed.
    monkeypatch.setitem(sys.modules, "mlx_embeddings", None)
    monkeypatch.setitem(sys.modules, "mlx_embeddings.utils", None)
    with pytest.raises(ModelUnsupportedError) as refused:
        load_base(encoder_dirs["bert"])
    assert "encoder embedding model (bert)" in refused.value.message
    assert "pip install 'mlxd[embeddings]'" in (refused.value.hint or "")


@pytest.mark.parametrize("family", FAMILIES)
def test_an_input_over_the_budget_runs_a_few_pieces_of_its_layers_per_step(
    tmp_path: Path, family: str
) -> None:
    """While streams decode, an encoder input larger than the step's budget cannot be cut into
    chunks: it runs as many pieces of its layers (linear maps, norms) per worker pass as the
    budget holds, one at least, and its vector is the one it gets whole."""
    import json
    from concurrent.futures import Future
    from typing import Any

    from mlxd.runtime.demo_embedders import build_encoder_model
    from mlxd.runtime.mlx.commands import Embed
    from mlxd.runtime.mlx.embed import Embedder
    from mlxd.runtime.mlx.encoder import load_encoder

    path = build_encoder_model(tmp_path / family, family=family, num_layers=3)
    config = json.loads((path / "config.json").read_text())
    _, _, forward = load_encoder(path, config, config["model_type"])
    rows = [[7 + i % 50 for i in range(40)], [9, 10, 11]]

    def embed(budget: int) -> tuple[np.ndarray, list[int]]:
        embedder = Embedder(forward)
        future: Future[Any] = Future()
        embedder.add(Embed(("m", None, None), rows, "mean", True, future))  # type: ignore[arg-type]
        ran = []
        while embedder:
            ran.append(embedder.step(budget))
        return future.result(), ran

    pieces, _ = forward.layered(rows[:1])
    assert len(pieces) >= 3 * 8  # a layer's linear maps (q, k, v, out, MLP) and norms, at least
    whole, whole_steps = embed(4096)
    assert whole_steps == [80]  # both rows in one batch, padded to 40 tokens
    one_by_one, steps = embed(3)  # 40 tokens over the pieces: 2 a piece, so one a pass
    assert steps[0] == 3  # the short one, whole
    assert len(steps) == 1 + len(pieces)
    few, steps = embed(8)  # 40 tokens over the pieces: 2 a piece, so 4 pieces a pass
    assert steps[0] == 3
    assert len(steps) == 1 + -(-len(pieces) // 4)
    assert all(0 < ran <= 8 for ran in steps)
    assert np.allclose(one_by_one, whole, atol=1e-5)
    assert np.allclose(few, whole, atol=1e-5)


def test_beside_an_open_stream_an_encoder_gives_the_vectors_it_gives_idle(
    oai: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a stream decodes, an embedding batch is at most ``prefill_step_size`` tokens (64
    here), so these inputs (about 100 tokens) run a few pieces of their layers per pass;
    through the daemon they come out as they do with nothing else running."""
    from mlxd.runtime.mlx.embed import Embedder

    passes: list[int] = []
    next_pieces = Embedder._next_pieces

    def counted(self: Embedder, budget: int) -> int:
        passes.append(budget)
        return next_pieces(self, budget)

    monkeypatch.setattr(Embedder, "_next_pieces", counted)  # the daemon runs in this process
    long_inputs = [("the small daemon wakes up " * 20) + f"again {i}" for i in range(3)]
    idle = _vectors(oai.embeddings.create(model="bert", input=long_inputs, encoding_format="float"))
    assert not passes  # with nothing decoding, one batch runs whole
    stream = oai.completions.create(
        model="chat", prompt="Once upon a time", max_tokens=400, stream=True, temperature=0
    )
    chunks = iter(stream)
    next(chunks)  # the stream decodes from here on
    beside = _vectors(oai.embeddings.create(model="bert", input=long_inputs, encoding_format="float"))
    assert sum(1 for _ in chunks) > 10  # and went on after
    assert len(passes) >= 2 * len(long_inputs)  # each input a few pieces at a time (2 layers here)
    assert np.allclose(beside, idle, atol=1e-5)
