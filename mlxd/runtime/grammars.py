"""Grammars for constrained decoding: JSON Schemas, forced tool calls and thinking blocks as
llguidance grammars, checked before a request is admitted.

llguidance was the only library that produced schema-valid output every time in our
measurements. Everything here is pure Python over llguidance (no MLX): admission builds
and checks a request's grammar off the worker, so a schema that cannot be enforced is a
400 before anything is queued. ``mlxd.runtime.mlx.constrained`` then compiles it per
tokenizer and enforces it on the worker.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import llguidance
import numpy as np

from mlxd.errors import RequestError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
# Compact separators and no free whitespace: with flexible whitespace a model can loop
# on spaces until max_tokens.
_JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


class GrammarError(RequestError, ValueError):
    """A schema that cannot be enforced: too large, too deep, invalid or using unsupported keywords."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="response_format", code="invalid_schema")


def _too_deep(node: Any, limit: int) -> bool:
    """Whether the JSON document nests deeper than ``limit`` (stops early, no recursion blow-up)."""
    if limit < 0:
        return True
    if isinstance(node, dict):
        return any(_too_deep(value, limit - 1) for value in node.values())
    if isinstance(node, list):
        return any(_too_deep(value, limit - 1) for value in node)
    return False


def _check_shape(schema: Any) -> str:
    """The schema serialized, after the size and depth caps that keep compilation cheap."""
    if not isinstance(schema, dict):
        raise GrammarError(f"a JSON schema must be an object, not {type(schema).__name__}")
    if _too_deep(schema, MAX_SCHEMA_DEPTH):
        raise GrammarError(f"the JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GrammarError(f"the JSON schema is not serializable JSON: {exc}") from exc
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise GrammarError(f"the JSON schema is larger than {MAX_SCHEMA_BYTES // 1024} KB")
    return text


def json_grammar(schema: dict[str, Any] | None, *, what: str = "JSON schema") -> str:
    """The llguidance grammar for a JSON Schema, or for any JSON object when ``schema`` is None.

    Raises:
        GrammarError: the schema is oversized, too deep, invalid or uses unsupported keywords;
            the message names the problem (e.g. ``Unimplemented keys: ["not"]``).
    """
    text = _check_shape({"type": "object"} if schema is None else schema)
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(text, overrides=_JSON_OPTIONS)
    except ValueError as exc:
        raise GrammarError(f"unsupported {what}: {exc}") from exc
    return _validated(grammar, what)


def validate_schema(schema: dict[str, Any]) -> None:
    """Reject a schema before admission, without a tokenizer.

    About 1 ms for a typical schema, up to ~0.1 s near the size cap: call it off the event loop.

    Raises:
        GrammarError: as ``json_grammar``.
    """
    json_grammar(schema)


def tagged_json_grammar(prefix: str, schema: dict[str, Any], suffix: str) -> str:
    """A grammar for ``prefix``, then JSON matching ``schema``, then ``suffix`` (a tool call in
    the model's own tags, e.g. ``<tool_call>\\n{...}\\n</tool_call>``)."""
    return structured_grammar(None, calls=ToolCalls(prefix, suffix, schema, forced=True))


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """Tool calls written as JSON between tags (``start`` JSON ``end``), each matching ``schema``.

    ``forced``: the output is exactly one call (``tool_choice`` required or named); else
    the output is calls (one, or with ``many`` as many as the model writes) or the JSON
    content, whichever the model starts.
    """

    start: str
    end: str
    schema: dict[str, Any]
    forced: bool = False
    many: bool = True


@dataclass(frozen=True, slots=True)
class ThinkingBlock:
    """A reasoning block the prompt has opened: the model thinks freely, at most ``max_tokens``
    tokens, then closes it with its end tag (``end_tokens``; the tag's text cannot be
    spelled out inside), and the constrained answer follows."""

    end: str
    end_tokens: tuple[int, ...]
    max_tokens: int


def structured_grammar(
    content: dict[str, Any] | None,
    *,
    calls: ToolCalls | None = None,
    thinking: ThinkingBlock | None = None,
) -> str:
    """The grammar of a constrained answer: JSON content matching ``content`` (None: any
    object), or tool calls (``calls``), after a bounded reasoning block when the prompt
    opened one (``thinking``).

    Raises:
        GrammarError: a schema is oversized, too deep, invalid, unsupported or admits no
            output; the message names the problem.
    """
    rules = []
    if calls is not None:
        json_grammar(calls.schema, what="tool parameters schema")
        rules.append(f"call: {json.dumps(calls.start)} {_json_rule(calls.schema)} {json.dumps(calls.end)}")
    if calls is None or not calls.forced:
        json_grammar(content)
        rules.append(f"content: {_json_rule(content)}")
    if calls is None:
        rules.append("body: content")
    elif calls.forced:
        rules.append("body: call")
    elif calls.many:
        rules.append(f"body: content | call (SEP call)*\nSEP: {_SEPARATOR}")
    else:
        rules.append("body: content | call")
    # Checked without the reasoning block, whose end tag is a token only the model's
    # tokenizer knows.
    answer = _validated(
        _lark(["start: body", *rules]), "JSON schema" if calls is None else "tool parameters schema"
    )
    if thinking is None:
        return answer
    end = " ".join(f"<[{token}]>" for token in thinking.end_tokens)
    tag = "".join(f"\\x{{{ord(c):x}}}" for c in thinking.end)
    return _lark(
        [
            f"start: thinking {end} AFTER_THOUGHT body",
            f"thinking[max_tokens={thinking.max_tokens}]: THOUGHT",
            # Free text that never spells the end tag out: only the tag's own tokens end it.
            f"THOUGHT: /(?s:.*)/ & ~/(?s:.*){tag}(?s:.*)/",
            f"AFTER_THOUGHT: {_SEPARATOR}",
            *rules,
        ]
    )


#: What may stand between a reasoning block and the answer, or between two tool calls.
_SEPARATOR = "/\\n{0,2}/"


def _json_rule(schema: dict[str, Any] | None) -> str:
    """A lark ``%json`` expansion of ``schema`` (None: any object) with mlxd's JSON options
    (checked first with ``json_grammar``)."""
    whole = {"type": "object"} if schema is None else schema
    return "%json " + json.dumps({**whole, "x-guidance": dict(_JSON_OPTIONS)}, separators=(",", ":"))


def _lark(lines: list[str]) -> str:
    """A grammar from lark rules; llguidance's refusal is a ``GrammarError``."""
    try:
        grammar = llguidance.LLMatcher.grammar_from_lark("\n".join([*lines, ""]))
    except ValueError as exc:
        raise GrammarError(f"unsupported grammar: {exc}") from exc
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise GrammarError(f"unsupported grammar: {messages[0]}")
    return grammar


def _validated(grammar: str, what: str) -> str:
    """``grammar`` once llguidance accepts it and it admits some output; else a
    ``GrammarError`` naming ``what``."""
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise GrammarError(f"unsupported {what}: {messages[0]}")
    # A grammar that admits nothing (e.g. a $ref that only refers to itself) allows no
    # first byte: decoding under it could only end the output at once, empty.
    bytes_tokenizer = _byte_tokenizer()
    matcher = llguidance.LLMatcher(bytes_tokenizer, grammar, log_level=0)
    words = (bytes_tokenizer.vocab_size + 31) // 32
    mask = np.zeros(words, dtype=np.int32)
    matcher.unsafe_compute_mask_ptr(mask.ctypes.data, words * 4)
    first = np.unpackbits(mask.view(np.uint8), count=_Bytes.eos_token_id, bitorder="little")
    if not first.any() and not matcher.is_accepting():
        raise GrammarError(f"unsatisfiable {what}: no output can match it")
    return grammar


class _Bytes:
    """A tokenizer whose tokens are the 256 bytes (and an end token): every output is
    reachable with it, so what it cannot start, no model's tokenizer can."""

    eos_token_id: ClassVar[int] = 256
    bos_token_id: ClassVar[int | None] = None
    tokens: ClassVar[list[bytes]] = [bytes([i]) for i in range(256)] + [b"</s>"]
    special_token_ids: ClassVar[list[int]] = [256]

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


@functools.cache
def _byte_tokenizer() -> llguidance.LLTokenizer:
    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()))
