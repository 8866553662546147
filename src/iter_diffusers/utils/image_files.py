"""Images into float arrays and back to 8 bits, by one rule for every reader in the package.

``iter-sr`` and ``iter-sr-eval`` (files), the training data (images of a ``datasets`` column) and the pipeline
(PIL inputs) all read pixels with :func:`image_to_array`: 16-bit grey (PIL modes ``I;16*`` and ``I``) is divided
by 65535, every other mode goes through PIL's ``convert("RGB")`` (palette expanded, alpha dropped, CMYK
converted) and is divided by 255. What each reader does besides (alpha, EXIF orientation, its error messages)
stays with it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

import numpy as np
import PIL.Image
import PIL.ImageOps

__all__ = ["SIXTEEN_BIT_MODES", "ImageTooLargeError", "open_image", "image_to_array", "to_u8"]

#: PIL modes of 16-bit grey images (16-bit PNGs open as ``I;16`` or, with older Pillow, ``I``).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageTooLargeError(ValueError):
    """An image whose header announces more pixels than the caller's limit."""

    def __init__(self, size: tuple[int, int], limit: int):
        self.size, self.limit = size, limit
        width, height = size
        super().__init__(f"{width}x{height} pixels ({width * height:,}) is over the limit of {limit:,} pixels")


@contextmanager
def _pillow_bomb_guard_off():
    # Pillow reads its decompression-bomb limit from this global at every open (a raw DecompressionBombWarning
    # on stderr, an error at twice the limit); there is no per-call switch. Not for threads opening images at once.
    saved = PIL.Image.MAX_IMAGE_PIXELS
    PIL.Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = saved


def open_image(path: str | os.PathLike, exif_transpose: bool = False, max_pixels: int | None = None
               ) -> PIL.Image.Image:
    """Open and decode ``path`` completely (the file is closed on return), optionally turned upright by its EXIF
    orientation. PIL's exceptions pass through, for each caller to word.

    ``max_pixels`` replaces Pillow's decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) for this call: an
    image of more pixels raises :class:`ImageTooLargeError` from its header, before anything is decoded; 0 means
    no limit. None keeps Pillow's guard.
    """
    with nullcontext() if max_pixels is None else _pillow_bomb_guard_off(), PIL.Image.open(path) as image:
        if max_pixels and image.width * image.height > max_pixels:
            raise ImageTooLargeError(image.size, max_pixels)
        image.load()
        return PIL.ImageOps.exif_transpose(image) if exif_transpose else image


def image_to_array(image: PIL.Image.Image) -> np.ndarray:
    """A PIL image of any 8- or 16-bit mode -> ``(H, W, 3)`` float32 RGB in [0, 1]."""
    if image.mode in SIXTEEN_BIT_MODES:
        grey = np.clip(np.asarray(image, dtype=np.float32), 0, 65535) / 65535.0
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def to_u8(array: np.ndarray) -> np.ndarray:
    """Float values in [0, 1] -> uint8, clipped first (an out-of-range value must not wrap around), rounded half
    to even. One float working copy, changed in place: a 4K output is 600 MB in float32."""
    work = np.array(array, dtype=np.float32)
    np.clip(work, 0, 1, out=work)
    work *= 255
    np.rint(work, out=work)
    return work.astype(np.uint8)
