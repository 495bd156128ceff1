"""Images from requests: checked cheaply where they arrive, decoded off the event loop.

``check`` reads only what an image's header says (format, width, height) and refuses,
before a single pixel is decoded, what is over the caps: too many bytes, or more pixels
than ``max_pixels`` (a 20,000 x 20,000 PNG of a few KB would otherwise expand to 1.2 GB).
``decode`` then turns an image into RGB pixels; a truncated or corrupt file is a 400
naming the image, never a 500. Pillow does the reading.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import numpy.typing as npt

from mlxd.errors import RequestError
from mlxd.runtime.requests import ImageInput

#: What Pillow raises for a file it cannot read (besides its own ``UnidentifiedImageError``,
#: an ``OSError``): a truncated stream, a broken header, an absurd size field.
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, MemoryError)


def check(data: bytes, param: str, *, max_bytes: int, max_pixels: int) -> ImageInput:
    """An image whose size is within the caps, per its header (nothing is decoded).

    Raises:
        RequestError: empty, too large, not an image, or too many pixels.
    """
    from PIL import Image

    if not data:
        raise RequestError("the image is empty", param=param)
    if len(data) > max_bytes:
        raise RequestError(f"the image has {len(data)} bytes; at most {max_bytes} are accepted", param=param)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about bombs; the cap below decides
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError:  # Pillow's own cap, far above any sane one
        raise RequestError(f"the image has more than {max_pixels} pixels", param=param) from None
    except _UNREADABLE:
        raise RequestError("the image is not a readable PNG, JPEG, GIF or WebP file", param=param) from None
    if width * height > max_pixels:
        raise RequestError(
            f"the image is {width}x{height} pixels; at most {max_pixels} pixels are accepted", param=param
        )
    return ImageInput(data, hashlib.sha256(data).hexdigest(), param)


def decode(image: ImageInput) -> npt.NDArray[np.uint8]:
    """The image's pixels as an (height, width, 3) RGB array (blocking: call it off the loop).

    Raises:
        RequestError: the file is truncated or corrupt.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(image.data)) as opened:
                return np.asarray(opened.convert("RGB"), dtype=np.uint8)
    except (*_UNREADABLE, Image.DecompressionBombError):
        raise RequestError("the image is truncated or corrupt", param=image.param) from None
