"""JSON Schemas shared by the constrained-decoding tests."""

from __future__ import annotations

from typing import Any

#: Nested objects, arrays, enums, bounded numbers and required fields; every number is
#: bounded and stepped so that even random weights reach the end of it.
PET: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "score": {"type": "number", "minimum": -1, "maximum": 1, "multipleOf": 0.01},
        "kind": {"enum": ["cat", "dog", "bird"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "owner": {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": 9999},
                "verified": {"type": "boolean"},
            },
            "required": ["id", "verified"],
            "additionalProperties": False,
        },
        "note": {"type": "string", "maxLength": 20},
    },
    "required": ["name", "age", "score", "kind", "tags", "owner"],
    "additionalProperties": False,
}
