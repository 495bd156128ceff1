"""The annotated value types of the schema: sizes, durations, memory budgets, hosts.

Each parses the human-friendly spelling users write (``"4MiB"``, ``"15m"``, ``"75%"``) and
tells the JSON Schema about that spelling rather than about the parsed number.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, Strict, WithJsonSchema

from mlxd.config.units import format_duration, parse_duration, parse_size

#: Longest path value (``model``, ``adapter``, a directory) accepted; anything longer is a mistake.
MAX_PATH_LENGTH = 4096

_SIZE_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*([KkMmGgTt][Ii]?[Bb]|[Bb])?\s*$"
_DURATION_PATTERN = r"^\s*(forever|never|-1|[0-9]+(\.[0-9]+)?|([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+)\s*$"
_PERCENT_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$"


def _memory_budget(value: object) -> object:
    if isinstance(value, str) and value.strip().endswith("%"):
        number = value.strip()[:-1]
        try:
            pct = float(number)
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage such as '75%'") from None
        if not 0 < pct <= 100:
            raise ValueError("a percentage of memory must be between 0 and 100")
        return value.strip()
    parse_size(value)
    return value


def is_loopback(host: str) -> bool:
    """True when binding ``host`` keeps the daemon unreachable from other machines."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": _SIZE_PATTERN}]}
    ),
]
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": _DURATION_PATTERN}]}
    ),
]
MemoryBudget = Annotated[
    str | int,
    BeforeValidator(_memory_budget),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": _PERCENT_PATTERN},
                {"type": "string", "pattern": _SIZE_PATTERN},
            ]
        }
    ),
]

#: A list of strings: TOML and JSON have arrays, not tuples, so the container is taken as
#: it comes; its items must still be strings.
Strings = Annotated[tuple[Annotated[str, Strict()], ...], Strict(False)]


class Section(BaseModel):
    """A table of the config: unknown keys are errors, values are strict, the result frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
