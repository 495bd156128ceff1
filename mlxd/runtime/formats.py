"""A generation's output formats, read from its model's tokenizer: the tool-call format
when tools are offered, the reasoning tags of a thinking model, and the grammar a
structured request (a JSON schema, a forced tool call) is decoded under.

Admission calls these off the MLX thread, so a model without the format a request needs,
or a schema that cannot be enforced, is a 400 before the worker sees the request.
"""

from __future__ import annotations

from typing import Any

from mlxd.errors import RequestError
from mlxd.output.reasoning import ReasoningFormat
from mlxd.output.tool_calls import ToolFormat
from mlxd.runtime.grammars import ThinkingBlock, ToolCalls, structured_grammar
from mlxd.runtime.requests import ChatPrompt, Constraint, GenerationRequest


def tool_format(request: GenerationRequest, tokenizer: Any) -> ToolFormat | None:
    """The model's tool-call format when the request offers tools (400 if it has none)."""
    if not isinstance(request.prompt, ChatPrompt) or not request.prompt.tools:
        return None
    if not tokenizer.has_tool_calling or tokenizer.tool_parser is None:
        raise RequestError(
            f"{request.alias!r} has no tool-calling format in its chat template", param="tools"
        )
    return ToolFormat(tokenizer.tool_call_start, tokenizer.tool_call_end, tokenizer.tool_parser)


def reasoning_format(request: GenerationRequest, tokenizer: Any, tokens: list[int]) -> ReasoningFormat | None:
    """A reasoning model's tags, and whether its template already opened the thinking block."""
    if not isinstance(request.prompt, ChatPrompt) or not getattr(tokenizer, "has_thinking", False):
        return None
    start, end = tokenizer.think_start, tokenizer.think_end
    tail = tokenizer.decode(tokens[-8:])
    return ReasoningFormat(start, end, starts_inside=tail.rfind(start) > tail.rfind(end))


#: The share of ``max_tokens`` a reasoning model may think before a constrained answer.
THINKING_SHARE = 0.5


def compile_grammar(
    constraint: Constraint,
    tools: ToolFormat | None,
    reasoning: ReasoningFormat | None = None,
    tokenizer: Any = None,
    max_tokens: int = 0,
) -> str:
    """The llguidance grammar for a constraint (compiled here, so a bad schema is a 400).

    When the prompt opened a reasoning block, the grammar lets the model think first, for
    at most ``THINKING_SHARE`` of ``max_tokens``, and constrains what follows the end tag.
    """
    schema = dict(constraint.schema) if constraint.schema is not None else None
    calls = None
    if constraint.tool_call or constraint.or_calls is not None:
        if tools is None or not tools.json_between_tags:
            raise RequestError(
                "a forced tool call, or tools together with response_format, needs a model whose "
                "tool calls are JSON between tags (Hermes/Qwen style)",
                param="tool_choice" if constraint.tool_call else "response_format",
            )
        call = schema if constraint.tool_call else dict(constraint.or_calls or {})
        calls = ToolCalls(
            tools.start + "\n", "\n" + tools.end, call or {}, constraint.tool_call, constraint.many_calls
        )
    thinking = None
    end_tokens = tuple(getattr(tokenizer, "think_end_tokens", None) or ())
    if reasoning is not None and reasoning.starts_inside and end_tokens:
        thinking = ThinkingBlock(reasoning.end, end_tokens, max(1, int(max_tokens * THINKING_SHARE)))
    return structured_grammar(None if constraint.tool_call else schema, calls=calls, thinking=thinking)
