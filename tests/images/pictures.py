"""Images for tests, made here: real PNGs, a truncated one, and a bomb's header."""

from __future__ import annotations

import base64
import io
import struct
import zlib


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 40)) -> bytes:
    """A real PNG of one colour."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def bomb_header(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in a few dozen bytes (no pixels follow)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    end = b"IEND"
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 0)
        + end
        + struct.pack(">I", zlib.crc32(end))
    )


def data_url(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,…``."""
    return f"data:{mime};base64,{b64(data)}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
