"""Images in requests, as every dialect sends them, onto checked ``ImageInput``s.

Chat Completions' ``image_url`` parts, Responses' ``input_image``, Anthropic's ``image``
blocks and Ollama's ``images`` all come down to an ``ImagePart``: a ``data:`` URL, bare
base64, or an ``http(s)`` URL. ``resolve_images`` applies the rules once for all of them:
at most ``[limits] max_images``, each within ``max_image_bytes`` and ``max_image_pixels``
(read from the header, before decoding), and a URL only with ``[server] allow_image_urls``
(a request must not make the daemon fetch arbitrary URLs); ``fetch`` then downloads the
allowed URLs, bounded in bytes and time. Errors name the part as the request placed it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx

from mlxd.config.schema import MlxdConfig
from mlxd.errors import RequestError
from mlxd.runtime.images import check
from mlxd.runtime.requests import ChatPrompt, GenerationRequest, ImageInput

#: How long fetching one allowed image URL may take.
FETCH_TIMEOUT = 10.0
#: The template's part for an image (vision chat templates write their image token for it).
IMAGE_PART: Mapping[str, str] = {"type": "image"}


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image as a request gave it, and where (for errors)."""

    kind: Literal["url", "base64"]
    value: str
    param: str


def from_url(url: Any, param: str) -> ImagePart:
    """An image given as a URL: ``data:…;base64,…`` or ``http(s)://…``."""
    if not isinstance(url, str) or not url:
        raise RequestError("the image needs a url", param=param)
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise RequestError("a data: URL image must be base64 (data:image/png;base64,…)", param=param)
        return ImagePart("base64", data, param)
    if url.startswith(("http://", "https://")):
        return ImagePart("url", url, param)
    raise RequestError("an image must be a data: URL, base64, or an http(s) URL", param=param)


def content(texts: Sequence[str | None]) -> str | list[dict[str, Any]]:
    """A message's content for the template: plain text, or text and image parts in order
    (``None`` in ``texts`` stands for an image)."""
    if all(t is not None for t in texts):
        return "".join(t or "" for t in texts)
    return [dict(IMAGE_PART) if t is None else {"type": "text", "text": t} for t in texts]


def _bytes(part: ImagePart, config: MlxdConfig) -> bytes:
    limit = config.limits.max_image_bytes
    encoded = limit * 4 // 3 + 4
    # Refuse before decoding a huge string; base64 wrapped in lines (as the ``base64`` command
    # writes it, 76 characters and a line break) is accepted, as Ollama's own decoder does.
    too_large = RequestError(f"the image is larger than {limit} bytes", param=part.param)
    if len(part.value) > encoded * 2:
        raise too_large
    value = part.value.replace("\r", "").replace("\n", "").strip()
    if len(value) > encoded:
        raise too_large
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("the image is not valid base64", param=part.param) from None


def resolve_images(parts: Sequence[ImagePart], config: MlxdConfig) -> tuple[ImageInput, ...]:
    """Every image of a request checked against the caps (URLs are fetched later, by ``fetch``).

    Raises:
        RequestError: too many images, a URL while they are not allowed, bad base64, or an
        image over the caps or not an image at all.
    """
    limits = config.limits
    if len(parts) > limits.max_images:
        raise RequestError(
            f"at most {limits.max_images} images are accepted per request",
            param=parts[limits.max_images].param,
        )
    out = []
    for part in parts:
        if part.kind == "url":
            if not config.server.allow_image_urls:
                raise RequestError(
                    "image URLs are not fetched: send the image inline as a data: URL or base64"
                    " (or set [server] allow_image_urls = true)",
                    param=part.param,
                )
            out.append(ImageInput(b"", "", part.param, url=part.value))
            continue
        out.append(
            check(
                _bytes(part, config),
                part.param,
                max_bytes=limits.max_image_bytes,
                max_pixels=limits.max_image_pixels,
            )
        )
    return tuple(out)


async def _download(image: ImageInput, config: MlxdConfig, client: httpx.AsyncClient) -> ImageInput:
    assert image.url is not None
    limit = config.limits.max_image_bytes
    try:
        async with client.stream("GET", image.url) as response:
            if response.status_code != 200:
                raise RequestError(f"fetching the image answered {response.status_code}", param=image.param)
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise RequestError(f"the image is larger than {limit} bytes", param=image.param)
    except httpx.HTTPError as exc:
        raise RequestError(
            f"the image could not be fetched: {type(exc).__name__}", param=image.param
        ) from None
    return check(bytes(data), image.param, max_bytes=limit, max_pixels=config.limits.max_image_pixels)


async def fetch(request: GenerationRequest, config: MlxdConfig) -> GenerationRequest:
    """The request with its image URLs downloaded (only reachable with ``allow_image_urls``)."""
    prompt = request.prompt
    if not isinstance(prompt, ChatPrompt) or not any(image.url for image in prompt.images):
        return request
    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False) as client:
        images = tuple([await _download(i, config, client) if i.url else i for i in prompt.images])
    return replace(request, prompt=replace(prompt, images=images))
