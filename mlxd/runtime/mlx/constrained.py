"""Constrained decoding: JSON Schema grammars enforced by llguidance as mlx-lm logits processors.

llguidance was the only library that produced schema-valid output every time in our
measurements. Its own MLX helper is a Metal kernel, which fails on the CPU backend, so the
token bitmask is applied here with numpy and an MLX additive bias on every platform.

Compiling happens once per (grammar, tokenizer) in a ``GrammarCache``; each sequence then
gets a cheap copy of the compiled matcher inside its own processor. Processors run on the
single MLX worker thread; the cache itself is safe to share between threads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import llguidance
import llguidance.hf
import mlx.core as mx
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

LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


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


class GrammarCache:
    """Compiled grammars keyed by (grammar hash, tokenizer identity), LRU-bounded.

    Also holds the llguidance tokenizer of each mlx-lm tokenizer (about 1 s to build at a
    150k vocabulary), for as long as that tokenizer lives.
    """

    def __init__(self, max_entries: int = 128) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        # The value keeps its LLTokenizer alive, so the id() in the key cannot be reused.
        self._compiled: OrderedDict[tuple[int, str], tuple[llguidance.LLTokenizer, llguidance.LLMatcher]]
        self._compiled = OrderedDict()
        self._tokenizers: weakref.WeakKeyDictionary[Any, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()

    def __len__(self) -> int:
        return len(self._compiled)

    def lltokenizer(self, tokenizer: Any) -> llguidance.LLTokenizer:
        """The llguidance view of an mlx-lm ``TokenizerWrapper``, with every EOS id it knows."""
        with self._lock:
            found = self._tokenizers.get(tokenizer)
        if found is None:
            eos = sorted(tokenizer.eos_token_ids) or None
            try:
                found = llguidance.hf.from_tokenizer(tokenizer._tokenizer, eos_token=eos)
            except ValueError as exc:
                raise GrammarError(f"constrained decoding does not support this tokenizer: {exc}") from exc
            with self._lock:
                found = self._tokenizers.setdefault(tokenizer, found)
        return found

    def compiled(self, tokenizer: Any, grammar: str) -> llguidance.LLMatcher:
        """The shared, never-advanced matcher for ``grammar``; copy it before use."""
        lltok = self.lltokenizer(tokenizer)
        key = (id(lltok), hashlib.sha256(grammar.encode()).hexdigest())
        with self._lock:
            entry = self._compiled.get(key)
            if entry is not None:
                self._compiled.move_to_end(key)
                return entry[1]
        matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(f"unsupported grammar: {matcher.get_error()}")
        with self._lock:
            self._compiled[key] = (lltok, matcher)
            self._compiled.move_to_end(key)
            while len(self._compiled) > self.max_entries:
                self._compiled.popitem(last=False)
        return matcher


def _mask(logits: mx.array, allowed: mx.array) -> mx.array:
    """``logits`` where ``allowed`` is 1, about -1e30 elsewhere, in the logits' dtype.

    An additive bias is branchless: on the CPU backend ``mx.where`` is several times slower
    on fragmented masks (~0.8 ms against ~0.1 ms at a 152k vocabulary), and float32 math
    avoids slow half-precision overflow paths.
    """
    bias = (allowed.astype(mx.float32) - 1.0) * 1e30
    return (logits.astype(mx.float32) + bias).astype(logits.dtype)


_apply_mask: Callable[[mx.array, mx.array], mx.array] = mx.compile(_mask)


class _Constraint:
    """One sequence's processor: feeds sampled tokens to the matcher and masks the logits."""

    def __init__(self, matcher: llguidance.LLMatcher, n_tokens: int, eos: list[int], width: int) -> None:
        self._matcher = matcher
        self._words = (n_tokens + 31) // 32
        self._eos = eos
        self._n_seen = -1
        self._consumed = 0
        self._resize(width)

    def _resize(self, width: int) -> None:
        # The buffer spans the logits width, so ids past the tokenizer (padding) stay 0.
        self._width = width
        self._bitmask = np.zeros(max(self._words, (width + 31) // 32), dtype=np.int32)
        only_eos = np.zeros((1, width), dtype=np.uint8)
        only_eos[0, [t for t in self._eos if t < width]] = 1
        self._only_eos = mx.array(only_eos)

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if logits.shape[-1] != self._width:
            self._resize(logits.shape[-1])
        # The first call's context varies (whole prompt, uncached part, cached + prompt):
        # only what arrives after it was sampled under this constraint.
        if self._n_seen < 0:
            self._n_seen = len(tokens)
        seen = self._n_seen + self._consumed
        matcher = self._matcher
        if len(tokens) > seen:
            new: list[int] = tokens[seen:].tolist()  # type: ignore[assignment]
            self._consumed += len(new)
            matcher.consume_tokens(new)
        if matcher.is_error() or matcher.is_stopped():
            # Done, or called once more after EOS: allow only EOS (all -inf would give NaN).
            return _apply_mask(logits, self._only_eos)
        bitmask = self._bitmask
        matcher.unsafe_compute_mask_ptr(bitmask.ctypes.data, self._words * 4)
        allowed = np.unpackbits(bitmask.view(np.uint8), count=self._width, bitorder="little")
        if matcher.is_error() or not allowed.any():
            return _apply_mask(logits, self._only_eos)
        return _apply_mask(logits, mx.array(allowed.reshape(1, -1)))


def make_constraint(tokenizer: Any, grammar: str, vocab_size: int, cache: GrammarCache) -> LogitsProcessor:
    """A fresh per-sequence logits processor enforcing ``grammar`` (from ``json_grammar``).

    ``vocab_size`` is the model's logits width, which may exceed the tokenizer's. The
    processor ends the sequence with EOS once the grammar is complete. It assumes every
    token it sees was sampled under it, so it does not support speculative decoding.

    Raises:
        GrammarError: the grammar does not compile for this tokenizer.
    """
    lltok = cache.lltokenizer(tokenizer)
    matcher = cache.compiled(tokenizer, grammar).deep_copy()
    return _Constraint(matcher, lltok.vocab_size, sorted(lltok.eos_tokens), vocab_size)
