"""Anthropic Messages in: a ``/v1/messages`` body onto the common request core.

``system`` becomes the first message; ``tool_result`` blocks become tool messages and
``tool_use`` blocks the assistant's earlier calls; ``tools`` (``input_schema``) become
function tools and ``tool_choice`` ``any`` / ``tool`` force a call under its grammar;
``thinking`` turns the template's thinking on or off. ``image`` blocks of user turns and
of their tool results (base64 or URL sources) are images for a vision model; server tools
are 400s naming the tool.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mlxd.config.schema import MlxdConfig
from mlxd.errors import RequestError
from mlxd.http.images import ImagePart, content, from_url
from mlxd.http.translate import CommonRequest, past_call, resolve
from mlxd.protocol.anthropic import ContentBlock, CountTokensRequest, MessagesRequest, Tool, ToolChoice
from mlxd.runtime.requests import GenerationRequest

#: Neutral field -> Anthropic's name, for errors.
NAMES = {"stop": "stop_sequences", "chat_template_kwargs": "thinking"}


def _text(blocks: str | list[ContentBlock] | None, param: str, images: list[ImagePart] | None = None) -> Any:
    """Text blocks joined; with ``images``, image blocks too (text and image parts, each
    image added to ``images``). Any other block is refused with its position."""
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    texts: list[str | None] = []
    for j, block in enumerate(blocks):
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "image" and images is not None:
            images.append(_image(block, f"{param}[{j}]"))
            texts.append(None)
        else:
            raise RequestError(f"{block.type!r} blocks are not accepted here", param=f"{param}[{j}]")
    return content(texts)


def _image(block: ContentBlock, where: str) -> ImagePart:
    source = block.source or {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return ImagePart("base64", source["data"], where)
    if source.get("type") == "url":
        return from_url(source.get("url"), where)
    raise RequestError("an image block needs a base64 or url source", param=where)


def _turn(
    role: str, blocks: str | list[ContentBlock], i: int, images: list[ImagePart]
) -> list[dict[str, Any]]:
    """One Anthropic turn as chat-template messages (tool results become tool messages)."""
    param = f"messages[{i}].content"
    if role not in ("user", "assistant"):
        raise RequestError(f"role must be 'user' or 'assistant', not {role!r}", param=f"messages[{i}].role")
    if isinstance(blocks, str):
        return [{"role": role, "content": blocks}]
    out: list[dict[str, Any]] = []
    texts: list[str | None] = []
    calls: list[dict[str, Any]] = []
    shown: list[ImagePart] = []  # the turn's own images, after its tool results' in the prompt
    for j, block in enumerate(blocks):
        where = f"{param}[{j}]"
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # earlier reasoning is not shown to the model again (as templates do)
        elif block.type == "tool_use" and role == "assistant":
            calls.append(past_call(block.id, block.name, block.input or {}, where))
        elif block.type == "tool_result" and role == "user":
            result = _text(block.content, f"{where}.content", images)  # a screenshot tool's images
            out.append({"role": "tool", "tool_call_id": block.tool_use_id or "", "content": result})
        elif block.type == "image" and role == "user":
            shown.append(_image(block, where))
            texts.append(None)
        else:
            raise RequestError(f"{block.type!r} blocks are not accepted in a {role} turn", param=where)
    images.extend(shown)
    if texts or calls or not out:
        message: dict[str, Any] = {"role": role, "content": content(texts)}
        if calls:
            message["tool_calls"] = calls
        out.append(message)
    return out


def _tools(tools: list[Tool] | None) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.type not in (None, "custom"):
            raise RequestError(
                f"server tool {tool.type!r} is not supported: mlxd runs no tools itself", param=f"tools[{i}]"
            )
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema or {"type": "object"}}
        if tool.description:
            function["description"] = tool.description
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: ToolChoice | None) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if choice.type in ("auto", "none"):
        return choice.type
    if choice.type == "any":
        return "required"
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    raise RequestError("tool_choice type must be 'auto', 'any', 'tool' or 'none'", param="tool_choice")


def common(request: CountTokensRequest) -> CommonRequest:
    """The prompt part of a Messages body (all that ``count_tokens`` needs)."""
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": _text(request.system, "system")})
    images: list[ImagePart] = []
    for i, message in enumerate(request.messages):
        messages.extend(_turn(message.role, message.content, i, images))
    if not request.messages:
        messages = []
    thinking = request.thinking
    kwargs = None
    if thinking is not None:
        if thinking.type not in ("enabled", "disabled", "adaptive"):
            raise RequestError("thinking type must be 'enabled', 'disabled' or 'adaptive'", param="thinking")
        kwargs = {"enable_thinking": thinking.type != "disabled"}
    choice = request.tool_choice
    return CommonRequest(
        model=request.model,
        messages=tuple(messages),
        chat_template_kwargs=kwargs,
        tools=_tools(request.tools),
        tool_choice=_tool_choice(choice),
        parallel_tool_calls=False if choice is not None and choice.disable_parallel_tool_use else None,
        images=tuple(images),
        names=NAMES,
    )


def translate(request: MessagesRequest, config: MlxdConfig) -> GenerationRequest:
    """Validate a Messages request against the config and resolve every parameter."""
    return resolve(
        replace(
            common(request),
            max_tokens=request.max_tokens,
            stop=request.stop_sequences,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            stream=request.stream,
        ),
        config,
    )
