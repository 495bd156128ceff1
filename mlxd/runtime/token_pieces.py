"""The text and the raw bytes of single tokens, for logprobs (pure Python, cached).

A byte-level BPE token can hold part of a UTF-8 character: its decoded text is then
U+FFFD, and only its bytes let a client rebuild the output exactly (OpenAI's ``bytes``).
"""

from __future__ import annotations

import re
from typing import Any

_SPM_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _gpt2_byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte-to-printable-character table used by byte-level BPE."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_DECODER = _gpt2_byte_decoder()


class TokenPieces:
    """Maps token ids to ``(text, raw bytes)`` for one tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[int, tuple[str, bytes]] = {}
        self._byte_level = "BPE" in type(getattr(tokenizer, "detokenizer", None)).__name__

    def __call__(self, token: int) -> tuple[str, bytes]:
        """The token's text as decoded alone, and the bytes it stands for."""
        found = self._cache.get(token)
        if found is None:
            text = self._tokenizer.decode([token])
            found = self._cache[token] = (text, self._raw(token, text))
        return found

    def _raw(self, token: int, text: str) -> bytes:
        piece = self._tokenizer.convert_ids_to_tokens(token)
        if isinstance(piece, str):
            if self._byte_level and all(c in _BYTE_DECODER for c in piece):
                return bytes(_BYTE_DECODER[c] for c in piece)
            byte = _SPM_BYTE.fullmatch(piece)
            if byte:
                return bytes([int(byte.group(1), 16)])
        return text.encode("utf-8")
