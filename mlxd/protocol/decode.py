"""Strict JSON decoding of request bodies into wire types, with errors a client can act on.

Strict: a string is never taken for a number or a boolean (``"max_tokens": "8"`` and
``"stream": "true"`` are 400s naming the field, as OpenAI answers them), and the
nesting depth is bounded before the decoder recurses into the body.

Why 64 levels: the deepest legitimate request is a JSON Schema inside a tool or a
``response_format`` (schemas are capped at 32 levels when they are compiled) inside
about five levels of request structure, so 64 leaves room; and every recursive walker
a request meets afterwards (the decoder, ``json.dumps`` of tool parameters, Jinja chat
templates, the grammar compiler) stays far from Python's recursion limit of 1000, where
a deeper body used to end in a ``RecursionError`` (a 500).
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Any, TypeVar

import msgspec

from mlxd.errors import RequestError

MAX_DEPTH = 64

T = TypeVar("T")

#: ``[``/``{`` -> +1, ``]``/``}`` -> -1 (as signed bytes), everything else is deleted.
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")
_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_MISSING = re.compile(r"Object missing required field `([^`]+)`")
_ROOT_KIND = re.compile(r"Expected `object`, got `([a-z]+)`")


class BodyError(RequestError):
    """The body is not a JSON object of the expected shape."""

    code = "invalid_body"


def nesting_depth(body: bytes) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings do not count).

    Runs at C speed (a few bulk byte operations and one ``accumulate``), so even a body of
    megabytes of brackets costs milliseconds, not a Python loop per byte.
    """
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return body.count(b"[") + body.count(b"{")  # an upper bound, and small
    # Drop escaped backslashes, then escaped quotes: what is left of each string sits
    # between two plain quotes, so the even-numbered parts of a split are outside strings.
    outside = b"".join(body.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2])
    steps = array("b", outside.translate(_BRACKETS, _NOT_BRACKETS))
    return max(accumulate(steps), default=0)


_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    found = _DECODERS.get(kind)
    if found is None:
        found = _DECODERS[kind] = msgspec.json.Decoder(kind, strict=True)
    return found


def decode_body(body: bytes, kind: type[T]) -> T:
    """A request body as ``kind``, or a ``BodyError`` saying what is wrong and where.

    Raises:
        BodyError: empty, not UTF-8 JSON, too deep, not an object, or a field of the wrong type.
    """
    if not body.strip():
        raise BodyError("the request body is empty")
    if nesting_depth(body) > MAX_DEPTH:
        raise BodyError(f"the JSON nests deeper than {MAX_DEPTH} levels")
    try:
        return _decoder(kind).decode(body)  # type: ignore[no-any-return]
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BodyError(_malformed(body, str(exc))) from None


def _invalid(message: str) -> BodyError:
    """msgspec's ``Expected `int`, got `str` - at `$.max_tokens``` as ``max_tokens: expected …``."""
    what, _, where = message.partition(" - at `")
    where = where.removesuffix("`")
    keys = where.startswith("key` in `")
    where = where.removeprefix("key` in `")
    path = where[2:] if where.startswith("$.") else where.lstrip("$")
    missing = _MISSING.fullmatch(what)
    if missing:
        param = f"{path}.{missing[1]}" if path else missing[1]
        return BodyError(f"{param} is required", param=param)
    detail = what[:1].lower() + what[1:]
    if not path:
        kind = _ROOT_KIND.fullmatch(what)
        if kind:
            return BodyError(f"the request body must be a JSON object, not {_article(kind[1])}")
        return BodyError(f"the request body is invalid: {detail}")
    return BodyError(f"{path}{' keys' if keys else ''}: {detail}", param=path)


def _article(kind: str) -> str:
    return {"array": "an array", "int": "a number", "float": "a number", "str": "a string"}.get(kind, kind)


def _malformed(body: bytes, detail: str) -> str:
    if _LONE_SURROGATE.search(body) or "UTF-8" in detail or "invalid character" in detail:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return "the body is not valid UTF-8 JSON"
        if _LONE_SURROGATE.search(body) and "truncated" in detail:
            return "the body is not valid UTF-8 JSON (a lone surrogate escape)"
    return f"the body is not valid JSON: {detail[0].lower() + detail[1:]}"
