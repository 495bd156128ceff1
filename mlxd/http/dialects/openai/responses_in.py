"""OpenAI Responses in: a ``/v1/responses`` body onto the common request core.

``input`` items become chat-template messages (``function_call`` items the assistant's
calls, ``function_call_output`` items tool messages), after the conversation of the
``previous_response_id`` when there is one; ``instructions`` lead as the system message
(they are not carried over from the previous response, as in OpenAI's API). Function
tools and ``tool_choice`` map onto the chat forms; built-in tools are 400s naming them;
``text.format`` is structured output and ``reasoning.effort`` turns thinking on or off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mlxd.config.schema import MlxdConfig
from mlxd.errors import RequestError
from mlxd.http.images import ImagePart, content, from_url
from mlxd.http.translate import CommonRequest, past_call, resolve, thinking
from mlxd.protocol.openai_responses import ResponsesRequest
from mlxd.protocol.requests import ResponseFormat
from mlxd.runtime.requests import GenerationRequest

#: Neutral field -> the Responses name, for errors.
NAMES = {
    "max_tokens": "max_output_tokens",
    "messages": "input",
    "response_format": "text.format",
    "chat_template_kwargs": "reasoning",
}
#: What the model is shown of each role (``developer`` is the system prompt).
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _content(parts: Any, param: str, images: list[ImagePart] | None = None) -> Any:
    """Text, or text and image parts when ``images`` collects the images of ``input``."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise RequestError("content must be a string or a list of parts", param=param)
    texts: list[str | None] = []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "refusal":
            continue
        elif kind == "input_image" and images is not None:
            if part.get("file_id"):
                raise RequestError(
                    "input_image takes an image_url (file ids are not served)", param=f"{param}[{j}]"
                )
            images.append(from_url(part.get("image_url"), f"{param}[{j}]"))
            texts.append(None)
        else:
            raise RequestError(f"content parts of type {kind!r} are not supported", param=f"{param}[{j}]")
    return content(texts)


def _text_only(message: dict[str, Any]) -> dict[str, Any]:
    """A message as a stored conversation keeps it: its images are not kept."""
    body = message.get("content")
    if not isinstance(body, list):
        return message
    return {**message, "content": "".join(p.get("text", "") for p in body)}


def input_messages(
    items: str | list[dict[str, Any]], images: list[ImagePart] | None = None
) -> list[dict[str, Any]]:
    """``input`` as chat-template messages (consecutive calls join one assistant message);
    ``images`` collects the images of the messages, in order."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message" and item.get("role") in _ROLES:
            body = _content(item.get("content"), f"{param}.content", images)
            out.append({"role": _ROLES[item["role"]], "content": body})
        elif kind == "message":
            raise RequestError(f"unknown role {item.get('role')!r}", param=f"{param}.role")
        elif kind == "function_call":
            call = past_call(item.get("call_id"), item.get("name"), item.get("arguments"), param)
            last = out[-1] if out else None
            if (
                last is not None
                and last["role"] == "assistant"
                and (last.get("tool_calls") or not last["content"])
            ):
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _content(output, f"{param}.output")
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""), "content": text})
        elif kind == "reasoning":
            continue  # earlier reasoning is not shown to the model again (as templates do)
        else:
            raise RequestError(f"input items of type {kind!r} are not supported", param=param)
    return out


def _tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind != "function":
            raise RequestError(
                f"built-in tool {kind!r} is not supported: mlxd runs no tools itself; use function tools",
                param=f"tools[{i}]",
            )
        function = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        return choice
    kind = choice.get("type")
    if kind == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if kind == "allowed_tools":
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice.get("mode"), "tools": choice.get("tools")},
        }
    raise RequestError(
        f"tool_choice {kind!r} names a built-in tool, which mlxd does not run", param="tool_choice"
    )


def _format(format_: Mapping[str, Any] | None) -> ResponseFormat | None:
    if format_ is None:
        return None
    kind = format_.get("type")
    if kind == "json_schema":
        return ResponseFormat("json_schema", {"schema": format_.get("schema")})
    return ResponseFormat(str(kind))


def _unsupported(request: ResponsesRequest) -> None:
    for name, value in (
        ("background", request.background),
        ("conversation", request.conversation),
        ("prompt", request.prompt),
        ("top_logprobs", request.top_logprobs),
    ):
        if value:
            raise RequestError(f"{name} is not supported", param=name, code="unsupported_parameter")


def translate(
    request: ResponsesRequest, config: MlxdConfig, previous: Sequence[Mapping[str, Any]] = ()
) -> tuple[GenerationRequest, list[dict[str, Any]]]:
    """Resolve a Responses request; also returns the conversation so far (without the
    instructions), which a stored response keeps for ``previous_response_id``."""
    _unsupported(request)
    images: list[ImagePart] = []
    conversation = [dict(m) for m in previous] + input_messages(request.input, images)
    system = [{"role": "system", "content": request.instructions}] if request.instructions else []
    text_format = request.text.format if request.text is not None else None
    common = CommonRequest(
        model=request.model,
        messages=tuple(system + conversation),
        chat_template_kwargs=thinking(request.reasoning.effort if request.reasoning else None, "reasoning"),
        max_tokens=request.max_output_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        tools=_tools(request.tools),
        tool_choice=_tool_choice(request.tool_choice),
        parallel_tool_calls=request.parallel_tool_calls,
        response_format=_format(text_format),
        stream=bool(request.stream),
        images=tuple(images),
        names=NAMES,
    )
    return resolve(common, config), [_text_only(m) for m in conversation]
