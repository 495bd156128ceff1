"""Tool-call arguments as a JSON object, for the dialects that send them so (Anthropic's
``tool_use.input``, Ollama's ``tool_calls[].function.arguments``)."""

from __future__ import annotations

import json
from typing import Any


def arguments_object(text: str) -> dict[str, Any]:
    """The parser's arguments text as an object (``{}`` when it is no JSON object: such
    output is never a call a client could run, but the call itself is still reported)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
