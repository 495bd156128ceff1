"""The API dialects mlxd speaks, and which one a path belongs to.

Each dialect is a skin over the one engine and output pipeline: a translator in, an
encoder out, and its own error envelope (``mlxd.http.errors``). The path decides the
dialect, so refusals that happen before routing (guards) already speak it.
"""

from __future__ import annotations

from enum import StrEnum


class Dialect(StrEnum):
    """An API family, by the clients that speak it."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    OLLAMA = "ollama"


def dialect_for(path: str) -> Dialect:
    """``/v1/messages*`` is Anthropic's, ``/api/*`` Ollama's, everything else OpenAI's."""
    if path.startswith("/api/") or path == "/api":
        return Dialect.OLLAMA
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return Dialect.ANTHROPIC
    return Dialect.OPENAI
