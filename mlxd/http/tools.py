"""Tool definitions and ``tool_choice``: which tools the model is shown, and which it must call.

Every dialect that offers tools comes down to the same two answers; the grammar of a
forced call then admits exactly one call of one of the forced tools.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Protocol

from mlxd.errors import RequestError
from mlxd.output.tool_calls import tool_call_schema
from mlxd.runtime.requests import Constraint

MAX_TOOLS = 128
TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

#: Validated OpenAI-style tool definitions, ``{"type": "function", "function": {...}}``.
Tools = tuple[dict[str, Any], ...]


class ToolRequest(Protocol):
    """What ``tool_choice`` reads of a request, in any dialect (OpenAI-style values)."""

    @property
    def tools(self) -> list[dict[str, Any]] | None: ...

    @property
    def tool_choice(self) -> str | dict[str, Any] | None: ...


def valid_tools(tools: list[dict[str, Any]]) -> Tools:
    """OpenAI-style function tools, checked (count, type, name, parameters), or a 400 naming the field."""
    if len(tools) > MAX_TOOLS:
        raise RequestError(f"at most {MAX_TOOLS} tools are accepted", param="tools")
    for i, tool in enumerate(tools):
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise RequestError(
                "tools must be of type 'function' with a 'function' object", param=f"tools[{i}]"
            )
        name = function.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise RequestError(
                "a tool name is 1-64 letters, digits, '_', '.' or '-'", param=f"tools[{i}].function.name"
            )
        if not isinstance(function.get("parameters", {}), dict):
            raise RequestError(
                "tool parameters must be a JSON Schema object", param=f"tools[{i}].function.parameters"
            )
    return tuple(tools)


def named(tools: Tools, names: list[str]) -> Tools:
    """The tools with these names (400 when a name is none of the request's tools)."""
    known = {t["function"]["name"] for t in tools}
    for name in names:
        if name not in known:
            raise RequestError(f"tool_choice names no tool of the request: {name!r}", param="tool_choice")
    return tuple(t for t in tools if t["function"]["name"] in names)


def _allowed_names(choice: dict[str, Any]) -> tuple[str, list[str]]:
    """``{"type": "allowed_tools", "allowed_tools": {"mode", "tools": [...]}}``: (mode, names)."""
    allowed = choice.get("allowed_tools")
    mode = allowed.get("mode") if isinstance(allowed, dict) else None
    listed = allowed.get("tools") if isinstance(allowed, dict) else None
    if mode not in ("auto", "required") or not isinstance(listed, list) or not listed:
        raise RequestError(
            "allowed_tools needs a mode ('auto' or 'required') and a non-empty list of tools",
            param="tool_choice",
        )
    names = []
    for entry in listed:
        function = entry.get("function") if isinstance(entry, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        name = name if name is not None else entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise RequestError("each allowed tool needs a function name", param="tool_choice")
        names.append(name)
    return mode, names


def tool_choice(request: ToolRequest) -> tuple[Tools | None, Tools | None]:
    """(the tools the chat template shows, the tools one of which must be called).

    ``none`` shows no tools; ``auto`` shows them all; ``required`` or a named function
    forces a call; ``allowed_tools`` shows only the listed tools and forces a call of one
    of them in ``required`` mode.
    """
    choice = request.tool_choice
    if not (
        choice in (None, "none", "auto", "required")
        or (isinstance(choice, dict) and choice.get("type") in ("function", "allowed_tools"))
    ):
        raise RequestError(
            "tool_choice must be 'none', 'auto', 'required', a named function or allowed_tools",
            param="tool_choice",
        )
    if not request.tools:
        if choice in (None, "none", "auto"):
            return None, None
        raise RequestError("tool_choice needs tools", param="tool_choice")
    tools = valid_tools(request.tools)
    if choice == "none":
        return None, None
    if choice is None or choice == "auto":
        return tools, None
    if choice == "required":
        return tools, tools
    assert isinstance(choice, dict)
    if choice["type"] == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise RequestError("tool_choice names no tool of the request", param="tool_choice")
        return tools, named(tools, [name])
    mode, names = _allowed_names(choice)
    allowed = named(tools, names)
    return allowed, allowed if mode == "required" else None


def structured(
    output: Constraint | None, shown: Tools | None, forced: Tools | None, *, parallel: bool = True
) -> Constraint | None:
    """The constraint of a request: its output format (``output``, from ``response_format``
    or a dialect's equivalent) together with its tools.

    A forced call is generated under its own grammar: the format applies to content, and
    a turn that must call a tool has none (agents send both). With tools on offer and a
    format, the answer is either tool calls (one unless ``parallel``) or content in the
    format, whichever the model starts: one grammar with both alternatives.
    """
    if forced:
        return Constraint(tool_call_schema([dict(t) for t in forced]), tool_call=True)
    if output is None or not shown:
        return output
    return replace(output, or_calls=tool_call_schema([dict(t) for t in shown]), many_calls=parallel)
