"""Image inputs: what every dialect's image field comes down to, checked before anything is
decoded, and the cache keys that keep two images apart. Pure parts in milliseconds; the
dialects through their official clients against a daemon on the fake engine, whose
``vision`` alias takes images (its admission is the runtime's own)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import ollama
import openai
import pytest

from mlxd.errors import RequestError
from mlxd.runtime.images import check, decode
from tests.conftest import RunningDaemon, fake_engine, serving
from tests.images.pictures import b64, bomb_header, data_url, png

CAPS = {"max_bytes": 1 << 20, "max_pixels": 4_000_000}


def test_check_reads_the_header_only_and_enforces_the_caps() -> None:
    image = check(png(20, 10), "p", **CAPS)
    assert image.digest != check(png(20, 10, (0, 0, 0)), "p", **CAPS).digest  # identity is the bytes
    assert decode(image).shape == (10, 20, 3)
    with pytest.raises(RequestError, match="3000x3000") as big:
        check(bomb_header(3000, 3000), "p", **CAPS)  # a few dozen bytes declaring 9 megapixels
    assert big.value.param == "p"
    with pytest.raises(RequestError, match="more than 4000000 pixels") as bomb:
        check(bomb_header(), "messages[0].content[1]", **CAPS)  # beyond even Pillow's own cap
    assert bomb.value.param == "messages[0].content[1]"
    with pytest.raises(RequestError, match="bytes"):
        check(png(20, 10), "p", max_bytes=10, max_pixels=100)
    with pytest.raises(RequestError, match="readable"):
        check(b"not an image at all", "p", **CAPS)


def test_a_truncated_png_passes_the_header_check_and_fails_to_decode_as_a_400() -> None:
    whole = png(64, 64)
    image = check(whole[: len(whole) // 2], "images[0]", **CAPS)
    with pytest.raises(RequestError, match="truncated or corrupt") as failed:
        decode(image)
    assert failed.value.param == "images[0]"


def test_the_byte_cap_counts_base64_without_its_line_breaks() -> None:
    from mlxd.config.schema import MlxdConfig
    from mlxd.http.images import ImagePart, resolve_images

    picture = png(64, 64)
    encoded = b64(picture)
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    at_limit = MlxdConfig(limits={"max_image_bytes": len(picture)})  # type: ignore[arg-type]
    assert len(resolve_images([ImagePart("base64", wrapped, "images[0]")], at_limit)) == 1
    below = MlxdConfig(limits={"max_image_bytes": len(picture) - 16})  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="larger than"):
        resolve_images([ImagePart("base64", wrapped, "images[0]")], below)
    with pytest.raises(RequestError, match="larger than"):  # refused before it is copied
        resolve_images([ImagePart("base64", "\n" * (3 * len(encoded)), "images[0]")], at_limit)


def test_each_image_gets_its_own_id_in_the_cache_key() -> None:
    from mlxd.runtime.mlx.vision import cache_key, image_id

    tokens = [1, 9, 9, 9, 2, 9, 9, 3]
    starts, key = cache_key(tokens, 9, ["aa" * 32, "bb" * 32])
    assert starts == [1, 5]
    assert key == [1, *[image_id("aa" * 32)] * 3, 2, *[image_id("bb" * 32)] * 2, 3]
    _, same_size_other_image = cache_key(tokens, 9, ["cc" * 32, "bb" * 32])
    assert same_size_other_image[1:4] != key[1:4]
    assert image_id("aa" * 32) < 0


CONFIG = """
[server]
port = 0

[limits]
max_images = 2
max_image_pixels = 1000000

[defaults]
temperature = 0.0
max_tokens = 8

[models.tiny]
model = "org/tiny"
default = true

[models.vision]
model = "org/vision-tiny"
"""


@pytest.fixture(scope="module")
def vision_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("vision")
    with serving(root, CONFIG, fake_engine(CONFIG, root)) as running:
        yield running


def _chat(url: str, model: str = "vision") -> dict[str, object]:
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this picture?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ],
    }


def test_every_dialect_takes_images_through_its_client(vision_daemon: RunningDaemon) -> None:
    picture = png(32, 24)
    oai = openai.OpenAI(base_url=vision_daemon.url + "/v1", api_key="x", max_retries=0)
    chat = oai.chat.completions.create(**_chat(data_url(picture)))  # type: ignore[call-overload]
    assert chat.choices[0].message.content
    assert chat.usage.prompt_tokens > 0
    response = oai.responses.create(
        model="vision",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Describe"},
                    {"type": "input_image", "image_url": data_url(picture), "detail": "auto"},
                ],
            }
        ],
    )
    assert response.output_text
    claude = anthropic.Anthropic(base_url=vision_daemon.url, api_key="x", max_retries=0)
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(picture)}}
    message = claude.messages.create(
        model="vision",
        max_tokens=8,
        messages=[{"role": "user", "content": [block, {"type": "text", "text": "Describe"}]}],  # type: ignore[list-item]
    )
    assert message.content
    llama = ollama.Client(host=vision_daemon.url)
    reply = llama.chat(
        model="vision", messages=[{"role": "user", "content": "Describe", "images": [picture]}]
    )
    assert reply.message.content
    generated = llama.generate(model="vision", prompt="Describe", images=[picture])
    assert generated.response


@pytest.mark.parametrize(
    ("body", "says", "param"),
    [
        (_chat(data_url(png(8, 8)), model="tiny"), "'tiny' is a text model", "messages[0].content[1]"),
        (_chat(data_url(png(64, 64)[:60])), "truncated or corrupt", "messages[0].content[1]"),
        (_chat(data_url(bomb_header())), "pixels", "messages[0].content[1]"),
        (_chat("https://example.com/cat.png"), "allow_image_urls", "messages[0].content[1]"),
        (_chat("data:image/png,notbase64"), "base64", "messages[0].content[1]"),
        (_chat("data:image/png;base64,@@@"), "base64", "messages[0].content[1]"),
        (_chat("file:///etc/passwd"), "data: URL", "messages[0].content[1]"),
    ],
    ids=["text-alias", "truncated", "bomb", "url", "not-base64-url", "bad-base64", "file-url"],
)
def test_bad_images_are_400s_and_the_daemon_keeps_serving(
    vision_daemon: RunningDaemon, body: dict[str, object], says: str, param: str
) -> None:
    with vision_daemon.client() as http:
        reply = http.post("/v1/chat/completions", json=body)
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert says in error["message"]
        assert error["param"] == param
        assert http.get("/health").status_code == 200
        assert http.post("/v1/chat/completions", json=_chat(data_url(png(8, 8)))).status_code == 200


def test_base64_wrapped_in_lines_is_accepted(vision_daemon: RunningDaemon) -> None:
    """As the ``base64`` command writes it: 76 characters, then a line break."""
    encoded = b64(png(32, 24))
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + "\n"
    assert "\n" in wrapped.strip()
    with vision_daemon.client() as http:
        chat = http.post("/v1/chat/completions", json=_chat(f"data:image/png;base64,{wrapped}"))
        assert chat.status_code == 200, chat.text
        body = {
            "model": "vision",
            "stream": False,
            "messages": [{"role": "user", "content": "x", "images": [wrapped]}],
        }
        assert http.post("/api/chat", json=body).status_code == 200
        broken = http.post(
            "/v1/chat/completions", json=_chat(f"data:image/png;base64,{wrapped[:40]} {wrapped[40:]}")
        )
        assert broken.status_code == 400  # a space inside is still not base64


def test_an_image_in_a_tool_result_counts_as_one_of_the_turn(vision_daemon: RunningDaemon) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(png(8, 8))}}
    use = {"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}}

    def body(model: str, result: list[object]) -> dict[str, object]:
        return {
            "model": model,
            "max_tokens": 4,
            "messages": [
                {"role": "user", "content": "Take a screenshot"},
                {"role": "assistant", "content": [use]},
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": result}],
                },
            ],
        }

    with vision_daemon.client() as http:
        assert http.post("/v1/messages", json=body("vision", [image])).status_code == 200
        refused = http.post("/v1/messages", json=body("tiny", [{"type": "text", "text": "x"}, image]))
        assert refused.status_code == 400, refused.text
        assert "'tiny' is a text model" in refused.json()["error"]["message"]
        odd = http.post("/v1/messages", json=body("vision", [{"type": "document", "source": {}}]))
        assert odd.status_code == 400
        assert "not accepted here" in odd.json()["error"]["message"]


def test_too_many_images_and_each_dialects_envelope(vision_daemon: RunningDaemon) -> None:
    picture = b64(png(8, 8))
    with vision_daemon.client() as http:
        three = http.post(
            "/api/chat",
            json={
                "model": "vision",
                "stream": False,
                "messages": [{"role": "user", "content": "x", "images": [picture] * 3}],
            },
        )
        assert three.status_code == 400
        assert "at most 2 images" in three.json()["error"]
        bomb = {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": b64(bomb_header())},
        }
        refused = http.post(
            "/v1/messages",
            json={"model": "vision", "max_tokens": 8, "messages": [{"role": "user", "content": [bomb]}]},
        )
        assert refused.status_code == 400
        assert refused.json()["type"] == "error"
        assert "pixels" in refused.json()["error"]["message"]
        assert httpx.get(vision_daemon.url + "/health").status_code == 200
