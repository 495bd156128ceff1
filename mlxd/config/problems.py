"""Turn pydantic validation errors into one readable line per offending key.

Each line reads ``models.qwen.defaults.temperature (line 12): Input should be ...``: the
key path as TOML spells it, where the value came from (a line of the file, an ``MLXD_*``
variable or the command line), then what is wrong. Unknown keys say so and suggest the
closest valid key.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from mlxd.config.schema import MlxdConfig
from mlxd.config.sources import model_in
from mlxd.config.toml_lines import line_of
from mlxd.errors import one_line

__all__ = ["Layers", "environment_variable", "format_problems", "key_label", "locate", "one_line"]

Loc = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_VALID_PREFIX = "Input should be a valid "
#: Type errors of strict validation, where saying what was given helps.
_STRICT_TYPES = frozenset({"int_type", "bool_type", "float_type", "string_type", "tuple_type", "dict_type"})
#: Keys whose values never appear in a message (it may reach the log).
_SECRETS = frozenset({"api_key"})


@dataclass(frozen=True)
class Layers:
    """Where values came from: the file (with its key lines), the environment, the command line."""

    file: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    lines: Mapping[tuple[str, ...], int] = field(default_factory=dict)


def key_label(path: Loc) -> str:
    """A key path as TOML would write it: ``models."llama3.1".model``, ``server.allowed_hosts[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
        out += f".{text}" if out else text
    return out


def locate(path: Loc, layers: Layers) -> str:
    """`` (line 12)``, `` (from MLXD_SERVER__PORT)`` or `` (command line)``: whence ``path``."""
    for end in range(len(path), 0, -1):
        prefix = path[:end]
        if _has(layers.overrides, prefix):
            return " (command line)"
        if _has(layers.env, prefix):
            return f" (from {environment_variable(prefix) or 'the environment'})"
        if _has(layers.file, prefix):
            line = line_of(dict(layers.lines), prefix)
            return f" (line {line})" if line is not None else ""
    return ""


def format_problems(exc: ValidationError, layers: Layers) -> list[str]:
    """One line per key path with errors; several union-branch errors on one key become one line."""
    merged = _merge(_merge(layers.file, layers.env), layers.overrides)
    grouped: dict[Loc, list[str]] = {}
    for error in exc.errors(include_url=False):
        path = _data_path(error, merged)
        grouped.setdefault(path, []).append(_message(error, path))
    return [
        one_line(f"{key_label(path) or '(top level)'}{locate(path, layers)}: {_combine(messages)}")
        for path, messages in grouped.items()
    ]


def _data_path(error: ErrorDetails, data: Any) -> Loc:
    """The part of an error's location that names keys of the input (not union branch tags)."""
    loc = error["loc"]
    path: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, Mapping) and isinstance(part, str) and part in node:
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str) and isinstance(part, int):
            if not 0 <= part < len(node):
                break
            node = node[part]
        elif index == len(loc) - 1 and isinstance(node, Mapping) and error["type"] == "missing":
            pass
        else:
            break
        path.append(part)
    return tuple(path)


def _message(error: ErrorDetails, path: Loc) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key" + _suggestion(path)
    if kind == "missing":
        return "required key is missing"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "tuple_type":  # TOML says array, and the user wrote neither
        message = "Input should be a list"
    if kind in _STRICT_TYPES and path and path[-1] not in _SECRETS:
        return f"{message}, not {_given(error['input'])}"
    return message


def _given(value: Any) -> str:
    """What a wrong-typed value was, as TOML spells it: ``"16"`` (a string), ``1.0``, ``true``."""
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(type(value))
    if kind is None:
        return "a list" if isinstance(value, list | tuple) else "a table"
    text = json.dumps(value, ensure_ascii=False)
    return f"{kind}: {text if len(text) <= 40 else text[:37] + '...'}"


def _combine(messages: list[str]) -> str:
    unique = list(dict.fromkeys(messages))
    if len(unique) > 1 and all(m.startswith(_VALID_PREFIX) for m in unique):
        kinds = [m.removeprefix(_VALID_PREFIX) for m in unique]
        return f"{_VALID_PREFIX}{', '.join(kinds[:-1])} or {kinds[-1]}"
    return "; ".join(unique)


def _suggestion(path: Loc) -> str:
    if not path or not isinstance(path[-1], str):
        return ""
    known = _known_keys(path[:-1])
    close = difflib.get_close_matches(path[-1], known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _known_keys(path: Loc) -> list[str]:
    """The keys the schema allows inside the table at ``path``."""
    model: type[BaseModel] = MlxdConfig
    expect_key = False  # inside a dict of models: the next part is a free-form alias
    for part in path:
        if expect_key:
            expect_key = False
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return []
        annotation = info.annotation
        if typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
            expect_key = True
        annotation = model_in(annotation)
        if annotation is None:
            return []
        model = annotation
    return [] if expect_key else list(model.model_fields)


def _has(data: Mapping[str, Any], path: Loc) -> bool:
    node: Any = data
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, Sequence) and not isinstance(node, str) and isinstance(part, int):
            if not 0 <= part < len(node):
                return False
            node = node[part]
        else:
            return False
    return True


def environment_variable(path: Loc) -> str | None:
    """The ``MLXD_*`` variable that sets ``path`` (or a table around it), if any."""
    names = {name.upper(): name for name in os.environ}
    keys = [str(part) for part in path]
    for end in range(len(keys), 0, -1):
        name = "MLXD_" + "__".join(keys[:end]).upper()
        if name in names:
            return names[name]
    return None


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
