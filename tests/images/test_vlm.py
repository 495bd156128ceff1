"""Vision through mlx-vlm (the ``vision`` extra), on real MLX: tiny random-weight Gemma 3,
Qwen2.5-VL and Qwen3-VL models built here, served by one daemon. The oracle is mlx-vlm's own
``generate`` on the same image and prompt: greedy output through mlxd must be the same
tokens. Gemma 3 decodes in the shared batch; the Qwen families' prompts with images decode
alone (3-D positions).

Without mlx-vlm (hidden as a missing package is: ``find_spec("mlx_vlm")``, which every layer
asks, finds nothing), copies of the same models load through mlx-lm and serve text; their
oracle is mlx-lm's own greedy ``stream_generate``."""

from __future__ import annotations

import io
import json
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
import pytest

from tests.conftest import RunningDaemon, serving
from tests.images.pictures import b64, data_url, png
from tests.images.vlm_models import (
    TEXT_HALF_FAMILIES,
    build_gemma3,
    build_qwen2_5_vl,
    build_qwen3_vl,
    build_text_half,
)

pytestmark = [pytest.mark.mlx, pytest.mark.server]

TOKENS = 12
QUESTION = "What is in this picture?"


@pytest.fixture(scope="module")
def vlm_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm-models")
    return {
        "gemma": build_gemma3(root / "gemma3"),
        "qwen": build_qwen2_5_vl(root / "qwen2_5_vl"),
        "qwen3": build_qwen3_vl(root / "qwen3_vl"),
        # Served only as text, by the tests that hide mlx-vlm.
        **{family: build_text_half(root / family, family) for family in TEXT_HALF_FAMILIES},
    }


@pytest.fixture(scope="module")
def vlm_daemon(
    vlm_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("vlm-daemon")
    # Copies loaded only by the tests that hide mlx-vlm; "idefics" is a family mlx-lm lacks.
    copies = {name: shutil.copytree(vlm_dirs[name], root / f"{name}-text") for name in vlm_dirs}
    idefics = _as_idefics(vlm_dirs["gemma"], root / "idefics")
    text_aliases = "".join(f'[models.{name}-text]\nmodel = "{path}"\n\n' for name, path in copies.items())
    config = f"""
[server]
port = 0

[runtime]
keep_alive = "forever"

[defaults]
temperature = 0.0
max_tokens = {TOKENS}

[models.gemma]
model = "{vlm_dirs["gemma"]}"
default = true

[models.qwen]
model = "{vlm_dirs["qwen"]}"

[models.qwen3]
model = "{vlm_dirs["qwen3"]}"

{text_aliases}[models.idefics]
model = "{idefics}"
"""
    with serving(root, config) as running:
        yield running


def _as_idefics(directory: Path, dest: Path) -> Path:
    """A copy of ``directory`` that says it is an Idefics 3, a family mlx-vlm has and mlx-lm lacks."""
    copy = shutil.copytree(directory, dest)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "model_type": "idefics3"}))
    return copy


def _oai(daemon: RunningDaemon) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key="x", max_retries=0)


def _content(picture: bytes, text: str = QUESTION) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": data_url(picture)}}]


def _ask(client: openai.OpenAI, model: str, picture: bytes) -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": _content(picture)}],  # type: ignore[misc]
        max_tokens=TOKENS,
    )


def _greedy_ids(
    daemon: RunningDaemon, model: str, picture: bytes | None, text: str = QUESTION
) -> tuple[list[int], dict[str, Any]]:
    """The token ids mlxd samples (``mlx_lm.server``'s integer ``logprobs``), and the usage."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": _content(picture, text) if picture else text}],
        "temperature": 0.0,
        "max_tokens": TOKENS,
        "logprobs": 1,
    }
    with daemon.client() as http:
        reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    return answer["choices"][0]["logprobs"]["tokens"], answer["usage"]


def _oracle(directory: Path, picture: bytes) -> list[int]:
    """mlx-vlm's own greedy ``stream_generate`` on the same image and prompt (the model's template)."""
    from mlx_vlm import load, stream_generate
    from PIL import Image

    model, processor = load(str(directory))
    messages = [{"role": "user", "content": [{"type": "text", "text": QUESTION}, {"type": "image"}]}]
    prompt = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    image = Image.open(io.BytesIO(picture))
    steps = stream_generate(model, processor, prompt, image=[image], max_tokens=TOKENS, temperature=0.0)
    return [step.token for step in steps][:TOKENS]


@pytest.mark.parametrize("alias", ["gemma", "qwen", "qwen3"])
def test_greedy_output_equals_mlx_vlm_generate(
    vlm_daemon: RunningDaemon, vlm_dirs: dict[str, Path], alias: str
) -> None:
    picture = png(32, 24, (10, 200, 90))
    tokens, usage = _greedy_ids(vlm_daemon, alias, picture)
    assert len(tokens) == usage["completion_tokens"] == TOKENS
    assert tokens == _oracle(vlm_dirs[alias], picture)


def test_every_dialect_sends_images_to_an_mlx_vlm_model(vlm_daemon: RunningDaemon) -> None:
    picture = png(40, 30, (250, 250, 0))
    chat = _ask(_oai(vlm_daemon), "gemma", picture)
    assert chat.usage.completion_tokens == TOKENS
    claude = anthropic.Anthropic(base_url=vlm_daemon.url, api_key="x", max_retries=0)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(picture)}}
    message = claude.messages.create(
        model="gemma",
        max_tokens=TOKENS,
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}, image]}],  # type: ignore[list-item]
    )
    assert message.usage.output_tokens == TOKENS
    assert message.content[0].text == chat.choices[0].message.content  # type: ignore[union-attr]
    reply = ollama.Client(host=vlm_daemon.url).chat(
        model="qwen",
        messages=[{"role": "user", "content": QUESTION, "images": [picture]}],
        options={"temperature": 0, "num_predict": TOKENS},
    )
    assert reply.eval_count == TOKENS
    text_only = _greedy_ids(vlm_daemon, "qwen", None)[1]["prompt_tokens"]
    assert (reply.prompt_eval_count or 0) > text_only  # the image's tokens count


def _screenshot_turns(result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A conversation in which a screenshot tool's result comes back as Anthropic blocks."""
    use = {"type": "tool_use", "id": "shot1", "name": "screenshot", "input": {}}
    return [
        {"role": "user", "content": "Take a screenshot and describe it."},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "shot1", "content": result}]},
    ]


@pytest.mark.parametrize("alias", ["gemma", "qwen"])
def test_an_anthropic_tool_result_carries_an_image(vlm_daemon: RunningDaemon, alias: str) -> None:
    claude = anthropic.Anthropic(base_url=vlm_daemon.url, api_key="x", max_retries=0)
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": b64(png(32, 24))},
    }
    text = {"type": "text", "text": "The screen:"}
    shown = claude.messages.count_tokens(
        model=alias,
        messages=_screenshot_turns([text, image]),  # type: ignore[arg-type]
    )
    told = claude.messages.count_tokens(
        model=alias,
        messages=_screenshot_turns([text]),  # type: ignore[arg-type]
    )
    assert shown.input_tokens > told.input_tokens  # the image's tokens count
    message = claude.messages.create(
        model=alias,
        max_tokens=TOKENS,
        messages=_screenshot_turns([text, image]),  # type: ignore[arg-type]
    )
    # Anthropic counts the tokens read from the prompt cache apart.
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == shown.input_tokens
    assert message.usage.output_tokens > 0


def test_listings_say_vision(vlm_daemon: RunningDaemon) -> None:
    with vlm_daemon.client() as http:
        listed = {m["id"]: m.get("capabilities", []) for m in http.get("/v1/models").json()["data"]}
    assert all("vision" in listed[alias] for alias in ("gemma", "qwen", "qwen3"))
    shown = ollama.Client(host=vlm_daemon.url).show("qwen3")
    assert "vision" in (shown.capabilities or [])


def test_two_images_never_share_a_cached_prefix(vlm_daemon: RunningDaemon, vlm_dirs: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    text = "Look at the small picture below and tell me what you see in it, please. " * 3
    tokenizer = AutoTokenizer.from_pretrained(str(vlm_dirs["qwen"]))
    image_start = len(tokenizer.encode(f"<|im_start|>user\n{text}<|vision_start|>", add_special_tokens=False))
    first, second = png(32, 24, (1, 2, 3)), png(32, 24, (3, 2, 1))  # one size: the same token count
    alone, _ = _greedy_ids(vlm_daemon, "qwen", first, text)
    again, same = _greedy_ids(vlm_daemon, "qwen", first, text)
    _, other = _greedy_ids(vlm_daemon, "qwen", second, text)
    assert again == alone
    assert same["prompt_tokens_details"]["cached_tokens"] > image_start  # reused past the image
    assert other["prompt_tokens_details"]["cached_tokens"] <= image_start  # never into another image


@pytest.mark.parametrize("alias", ["gemma", "qwen", "qwen3"])
def test_concurrent_requests_give_what_each_gives_alone(vlm_daemon: RunningDaemon, alias: str) -> None:
    """Gemma 3's sequences share the batch; the Qwen families' with images run alone, the rest wait."""
    asks: list[bytes | None] = [png(32, 24, (200, 0, 0)), None, png(24, 32, (0, 0, 200)), None]
    alone = [_greedy_ids(vlm_daemon, alias, picture)[0] for picture in asks]
    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(lambda picture: _greedy_ids(vlm_daemon, alias, picture)[0], asks))
    assert together == alone
    assert alone[0] != alone[1]


def test_bad_images_are_400s_and_the_alias_keeps_serving(vlm_daemon: RunningDaemon) -> None:
    client = _oai(vlm_daemon)
    whole = png(64, 64)
    part = "messages[0].content[1]"
    for alias, picture, says, param in [
        ("qwen", whole[: len(whole) // 2], "truncated or corrupt", part),
        ("gemma", b"GIF89a" + b"\0" * 20, "readable", part),
        # Qwen's processor refuses an aspect ratio over 200: the prompt as a whole fails
        ("qwen", png(1, 400), "do not fit", "messages"),
    ]:
        with pytest.raises(openai.BadRequestError) as bad:
            _ask(client, alias, picture)
        assert says in bad.value.message
        assert bad.value.body["param"] == param  # type: ignore[index]
    for alias in ("qwen", "gemma"):
        tokens, _ = _greedy_ids(vlm_daemon, alias, png(32, 24))
        assert len(tokens) == TOKENS


@pytest.fixture
def without_mlx_vlm(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlx-vlm hidden the way a missing package is: ``find_spec`` finds nothing and every import
    of it fails, also of the modules that the models built here have imported already."""
    for name in ["mlx_vlm", *(n for n in sys.modules if n.startswith("mlx_vlm."))]:
        monkeypatch.setitem(sys.modules, name, None)


def _mlx_lm_greedy(directory: Path) -> list[int]:
    """mlx-lm's own greedy ``stream_generate`` on the same text prompt (the model's template)."""
    from mlx_lm import load, stream_generate

    model, tokenizer = load(str(directory))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True
    )
    return [step.token for step in stream_generate(model, tokenizer, prompt, max_tokens=TOKENS)][:TOKENS]


@pytest.mark.usefixtures("without_mlx_vlm")
@pytest.mark.parametrize("alias", ["gemma", "qwen", "qwen3", *TEXT_HALF_FAMILIES])
def test_without_mlx_vlm_a_vision_model_serves_text_through_mlx_lm(
    vlm_daemon: RunningDaemon, vlm_dirs: dict[str, Path], alias: str
) -> None:
    tokens, usage = _greedy_ids(vlm_daemon, f"{alias}-text", None)
    assert len(tokens) == usage["completion_tokens"] == TOKENS
    assert tokens == _mlx_lm_greedy(vlm_dirs[alias])


@pytest.mark.usefixtures("without_mlx_vlm")
def test_without_mlx_vlm_an_image_is_a_400_naming_the_extra(vlm_daemon: RunningDaemon) -> None:
    client = _oai(vlm_daemon)
    chat = client.chat.completions.create(
        model="gemma-text", messages=[{"role": "user", "content": QUESTION}], max_tokens=TOKENS
    )
    assert chat.usage is not None
    assert chat.usage.completion_tokens == TOKENS
    assert chat.choices[0].finish_reason == "length"
    assert chat.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:
        _ask(client, "gemma-text", png(32, 24))
    assert "'gemma-text' is a text model" in refused.value.message
    assert "pip install 'mlxd[vision]'" in refused.value.message
    assert refused.value.body["param"] == "messages[0].content[1]"  # type: ignore[index]
    with vlm_daemon.client() as http:
        listed = {m["id"]: m.get("capabilities", []) for m in http.get("/v1/models").json()["data"]}
    assert "vision" not in listed["gemma-text"]
    assert "vision" not in (ollama.Client(host=vlm_daemon.url).show("gemma-text").capabilities or [])
    # A family mlx-lm has no module for stays a 422 that names the extra.
    with pytest.raises(openai.UnprocessableEntityError) as refused_model:
        _ask(client, "idefics", png(32, 24))
    assert refused_model.value.body["code"] == "model_unsupported"  # type: ignore[index]
    assert "served through mlx-vlm" in refused_model.value.message
    assert "pip install 'mlxd[vision]'" in refused_model.value.message
    again = client.chat.completions.create(
        model="gemma-text", messages=[{"role": "user", "content": QUESTION}], max_tokens=TOKENS
    )
    assert again.choices[0].message.content == chat.choices[0].message.content  # still serving


@pytest.mark.usefixtures("without_mlx_vlm")
def test_without_mlx_vlm_the_loader_refuses_what_mlx_lm_cannot_load_naming_the_extra(
    vlm_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """The daemon's checks refuse such a family before a load (above); the loader says the same."""
    from mlxd.errors import ModelUnsupportedError
    from mlxd.runtime.mlx.loading import load_base

    with pytest.raises(ModelUnsupportedError, match="not installed, and mlx-lm cannot load it") as refused:
        load_base(_as_idefics(vlm_dirs["gemma"], tmp_path / "idefics"))
    assert refused.value.hint == "pip install 'mlxd[vision]'"


def test_an_mlx_vlm_without_the_family_leaves_the_text_half_to_mlx_lm(
    vlm_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """An mlx-vlm older than the model: it serves text as without mlx-vlm, and an image for
    it is told to upgrade mlx-vlm rather than to install it."""
    from mlxd.config.families import mlx_vlm_family
    from mlxd.errors import ModelUnsupportedError
    from mlxd.runtime.mlx import loading
    from mlxd.runtime.mlx.vlm import UPGRADE_HINT, VlmModel

    config = json.loads((vlm_dirs["gemma"] / "config.json").read_text(encoding="utf-8"))
    assert mlx_vlm_family(config)
    assert not mlx_vlm_family({**config, "model_type": "no_such_family"})
    monkeypatch.setitem(sys.modules, "mlx_vlm.utils", None)  # installed, but broken:
    assert mlx_vlm_family(config)  # its load says why (below), nothing is hidden
    with pytest.raises(ModelUnsupportedError, match="which cannot be imported"):
        loading.load_base(vlm_dirs["gemma"])
    monkeypatch.delitem(sys.modules, "mlx_vlm.utils")
    # Neither mlx-vlm nor mlx-lm has the family: the 422 says to upgrade mlx-vlm, not to install it.
    unknown = shutil.copytree(vlm_dirs["gemma"], tmp_path / "unknown")
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "no_such_family"}))
    with pytest.raises(ModelUnsupportedError, match="which has no such family, and mlx-lm cannot") as refused:
        loading.load_base(unknown)
    assert refused.value.hint == UPGRADE_HINT
    monkeypatch.setattr(loading, "mlx_vlm_family", lambda config: False)
    loaded = loading.load_base(vlm_dirs["gemma"])
    assert loaded.vision is None
    assert not isinstance(loaded.model, VlmModel)  # mlx-lm's own module for the family
    assert loaded.images_hint == UPGRADE_HINT


def test_pull_validation_knows_mlx_vlm_families_and_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlxd.errors import HubError
    from mlxd.hub.validate import check_config

    idefics = {"model_type": "idefics3", "vision_config": {"model_type": "idefics3_vision"}}
    check_config(idefics, "org/idefics")  # not mlx-lm's, but mlx-vlm's: accepted
    monkeypatch.setitem(sys.modules, "mlx_vlm", None)  # find_spec finds nothing
    check_config({"model_type": "gemma3", "vision_config": {}}, "org/gemma")  # mlx-lm loads its text half
    with pytest.raises(HubError, match="served through mlx-vlm") as missing:
        check_config(idefics, "org/idefics")
    assert missing.value.hint == "pip install 'mlxd[vision]'"
    with pytest.raises(HubError, match="not supported by the installed mlx-lm"):
        check_config({"model_type": "idefics3"}, "org/idefics")  # no vision config: no hint about vision
