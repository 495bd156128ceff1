"""Render the commented starter ``mlxd.toml`` that ``mlxd config init`` writes.

It is generated from the schema's field descriptions and defaults, so it can never
drift from what the loader accepts; a test checks that it validates.
"""

from __future__ import annotations

import json
import math
import textwrap
import typing
from typing import Any

from pydantic import BaseModel, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo

from mlxd.config.generation import BUILTIN_DEFAULTS, GenerationDefaults
from mlxd.config.models import ModelConfig
from mlxd.config.schema import MlxdConfig
from mlxd.config.units import format_duration, format_size, parse_duration, parse_size

_WIDTH = 88
_HEADER = """\
# mlxd.toml: the configuration of the mlxd daemon.
#
# Every key is optional; the values below are the built-in defaults. A running daemon
# applies a valid edit within a second (host and port need a restart); an invalid edit
# changes nothing and is reported by `mlxd status`. Check an edit with `mlxd config check`.
#
# Environment variables override this file: MLXD_SERVER__PORT=9000, MLXD_SERVER__API_KEY=...
# Sizes are bytes or strings such as "512MB" or "2GiB"; durations are seconds or strings
# such as "30s", "15m", "1h30m", "0" or "forever".
"""

#: The example alias, commented out: a real model people start with.
EXAMPLE_ALIAS = "qwen"
_EXAMPLE: dict[str, Any] = {
    "model": "mlx-community/Qwen2.5-7B-Instruct-4bit",
    "revision": "main",
    "default": True,
    "keep_alive": "forever",
    "aliases": ["gpt-4o-mini"],
    "max_tokens_limit": 4096,
    "chat_template_kwargs": {"enable_thinking": False},
}
_EXAMPLE_DEFAULTS: dict[str, Any] = {"temperature": 0.2}


def render_starter() -> str:
    """The full starter file: every section and key with its description, plus an example alias."""
    out = [_HEADER]
    for name, info in MlxdConfig.model_fields.items():
        model = _section_model(info)
        optional = model is None and (model := _optional_section(info)) is not None
        if model is None:
            continue
        out.append(_banner(name, info.description))
        example = BUILTIN_DEFAULTS if model is GenerationDefaults else None
        section = [f"[{name}]"]
        for key, field in model.model_fields.items():
            section.extend(_comment(field.description))
            section.append(_entry(key, field, example))
            section.append("")
        if optional:  # present means on: shown commented out
            section = [line if line.startswith("#") or not line else f"# {line}" for line in section]
        out.extend(section)
    out.append(_banner("models", MlxdConfig.model_fields["models"].description))
    out.extend(_model_reference())
    out.extend(_example_alias())
    return "\n".join(out).rstrip() + "\n"


def toml_value(value: Any) -> str:
    """A Python value as a TOML value (strings, numbers, booleans, arrays, inline tables)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes; DEL must be escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _entry(key: str, field: FieldInfo, example: BaseModel | None) -> str:
    default = field.get_default(call_default_factory=True)
    if default is None:  # optional keys: shown commented out, with the built-in value
        shown = getattr(example, key, None) if example is not None else None
        return f"# {key} = {_display(field, shown)}" if shown is not None else f"# {key} ="
    return f"{key} = {_display(field, default)}"


def _display(field: FieldInfo, value: Any) -> str:
    """Sizes and durations as people write them ("4MiB", "15m"), the rest as TOML."""
    validators = _validators(field)
    if parse_size in validators and isinstance(value, int):
        return toml_value(format_size(value))
    if parse_duration in validators and isinstance(value, float):
        return toml_value(format_duration(value))
    return toml_value(value)


def _validators(field: FieldInfo) -> set[Any]:
    found = {m.func for m in field.metadata if isinstance(m, BeforeValidator)}
    stack = [field.annotation]
    while stack:
        annotation = stack.pop()
        for arg in typing.get_args(annotation):
            if isinstance(arg, BeforeValidator):
                found.add(arg.func)
            else:
                stack.append(arg)
    return found


def _model_reference() -> list[str]:
    """The keys of an alias table, each with its description, as one comment block."""
    lines = [
        '# Each [models.<alias>] table is a name requests can put in "model". Its keys:',
        "#",
    ]
    width = max(len(key) for key in ModelConfig.model_fields)
    for key, field in ModelConfig.model_fields.items():
        text = textwrap.wrap(field.description or "", _WIDTH - width - 5)
        lines.append(f"#   {key.ljust(width)}  {text[0] if text else ''}".rstrip())
        lines.extend(f"#   {'':{width}}  {more}" for more in text[1:])
    lines += ["#", "# An example (remove the leading '# ' to use it):", "#"]
    return lines


def _example_alias() -> list[str]:
    table = [f"[models.{EXAMPLE_ALIAS}]", *(f"{k} = {toml_value(v)}" for k, v in _EXAMPLE.items())]
    table += ["", f"[models.{EXAMPLE_ALIAS}.defaults]"]
    table += [f"{k} = {toml_value(v)}" for k, v in _EXAMPLE_DEFAULTS.items()]
    return [f"# {line}".rstrip() for line in table]


def _section_model(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _optional_section(info: FieldInfo) -> type[BaseModel] | None:
    """The section model of a ``Section | None`` field (a section whose presence switches it on)."""
    args = typing.get_args(info.annotation)
    if type(None) not in args:
        return None
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _banner(name: str, description: str | None) -> str:
    return (
        f"\n# ---- [{name}] "
        + "-" * max(4, _WIDTH - len(name) - 10)
        + "\n"
        + "\n".join(_comment(description))
    )


def _comment(text: str | None) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text or "", _WIDTH - 2)]


def _key(key: str) -> str:
    return key if key.replace("_", "a").replace("-", "a").isalnum() and key.isascii() else toml_value(key)
