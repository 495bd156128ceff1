"""Ollama in: ``/api/chat`` and ``/api/generate`` bodies onto the common request core.

``options`` map onto the sampling fields (``num_predict`` is ``max_tokens``,
``repeat_penalty`` / ``repeat_last_n`` the repetition penalty); ``format`` is structured
output (``"json"`` or a schema), enforced like ``response_format``; ``think`` turns the
template's thinking on or off; ``keep_alive`` (``0``: unload after the answer) overrides
the alias's. ``images`` (base64) are images for a vision model; a request-supplied
``template`` is refused (templates come from the model only).
"""

from __future__ import annotations

from typing import Any

from mlxd.config.schema import MlxdConfig
from mlxd.config.units import parse_duration
from mlxd.errors import RequestError
from mlxd.http.images import ImagePart, content
from mlxd.http.translate import CommonRequest, past_calls, resolve
from mlxd.protocol.ollama import ChatRequest, GenerateRequest, KeepAlive, Message, Options
from mlxd.protocol.requests import ResponseFormat
from mlxd.runtime.requests import GenerationRequest

#: Neutral field -> Ollama's name, for errors.
NAMES = {
    "max_tokens": "num_predict",
    "stop": "options.stop",
    "response_format": "format",
    "chat_template_kwargs": "think",
    "repetition_penalty": "repeat_penalty",
    "top_k": "options.top_k",
    "logit_bias": "options",
}


def model_name(name: str | None, config: MlxdConfig) -> str | None:
    """Ollama's clients may tag a name (``demo:latest``): the tag ``latest`` means the alias."""
    if name and name.endswith(":latest") and config.find_alias(name) is None:
        return name.removesuffix(":latest")
    return name


def keep_alive(value: KeepAlive | None) -> float | None:
    """Seconds a model stays loaded: ``"5m"``, a number of seconds, ``0`` now, negative forever."""
    if value is None:
        return None
    if isinstance(value, int | float) and value < 0:
        return float("inf")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise RequestError(str(exc), param="keep_alive") from None


def _format(value: str | dict[str, Any] | None) -> ResponseFormat | None:
    if value is None or value == "":
        return None
    if value == "json":
        return ResponseFormat("json_object")
    if isinstance(value, dict):
        return ResponseFormat("json_schema", {"schema": value})
    raise RequestError("format must be 'json' or a JSON schema object", param="format")


def _think(value: bool | str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return {"enable_thinking": value}
    if value not in ("low", "medium", "high"):
        raise RequestError("think must be true, false, 'low', 'medium' or 'high'", param="think")
    return {"enable_thinking": True, "reasoning_effort": value}


def _with_images(text: str, given: list[str] | None, param: str, images: list[ImagePart]) -> Any:
    """A message's content: its images first (as Ollama places them), then its text."""
    if not given:
        return text
    for j, data in enumerate(given):
        images.append(ImagePart("base64", data, f"{param}[{j}]"))
    return content([*([None] * len(given)), text])


def _message(message: Message, i: int, images: list[ImagePart]) -> dict[str, Any]:
    body = _with_images(message.content or "", message.images, f"messages[{i}].images", images)
    entry: dict[str, Any] = {"role": message.role, "content": body}
    if message.tool_name:
        entry["name"] = message.tool_name
    if message.tool_calls:
        entry["tool_calls"] = past_calls(message.tool_calls, f"messages[{i}].tool_calls")
    return entry


def _options(options: Options | None, format_: str | dict[str, Any] | None) -> dict[str, Any]:
    o = options or Options()
    predict = o.num_predict
    return {
        # -1 (until done) and -2 (fill the context) are Ollama's "no limit": the defaults apply.
        "max_tokens": predict if predict is not None and predict > 0 else None,
        "stop": o.stop,
        "temperature": o.temperature,
        "top_p": o.top_p,
        "top_k": o.top_k,
        "min_p": o.min_p,
        "seed": o.seed,
        "repetition_penalty": o.repeat_penalty,
        "repetition_context_size": o.repeat_last_n,
        "presence_penalty": o.presence_penalty,
        "frequency_penalty": o.frequency_penalty,
        "response_format": _format(format_),
    }


def num_ctx(options: Options | None) -> int | None:
    """The context window a request asks for (checked against the prompt by the route)."""
    value = options.num_ctx if options is not None else None
    if value is not None and value < 1:
        raise RequestError("num_ctx must be a positive number of tokens", param="num_ctx")
    return value


def chat(request: ChatRequest, config: MlxdConfig) -> GenerationRequest:
    """An ``/api/chat`` body, resolved."""
    images: list[ImagePart] = []
    common = CommonRequest(
        model=model_name(request.model, config),
        messages=tuple(_message(m, i, images) for i, m in enumerate(request.messages or [])),
        images=tuple(images),
        chat_template_kwargs=_think(request.think),
        tools=request.tools,
        stream=request.stream,
        keep_alive=keep_alive(request.keep_alive),
        names=NAMES,
        **_options(request.options, request.format),
    )
    return resolve(common, config)


def generate(request: GenerateRequest, config: MlxdConfig) -> GenerationRequest:
    """An ``/api/generate`` body, resolved: the prompt through the chat template, or as it is with ``raw``."""
    for field, value in (
        ("template", request.template),
        ("suffix", request.suffix),
        ("context", request.context),
    ):
        if value:
            raise RequestError(f"{field} is not supported", param=field, code="unsupported_parameter")
    images: list[ImagePart] = []
    if request.raw:
        if request.images:
            raise RequestError("images need the chat template (raw is on)", param="images")
        prompt: dict[str, Any] = {"prompt": request.prompt or ""}
    else:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        user = _with_images(request.prompt or "", request.images, "images", images)
        messages.append({"role": "user", "content": user})
        prompt = {
            "messages": tuple(messages),
            "chat_template_kwargs": _think(request.think),
            "images": tuple(images),
        }
    common = CommonRequest(
        model=model_name(request.model, config),
        stream=request.stream,
        keep_alive=keep_alive(request.keep_alive),
        names=NAMES,
        **prompt,
        **_options(request.options, request.format),
    )
    return resolve(common, config)
