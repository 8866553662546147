"""Images into float arrays and back to 8 bits, by one rule for every reader in the package.

``iter-sr`` and ``iter-sr-eval`` (files), the training data (images of a ``datasets`` column) and the pipeline
(PIL inputs) all read pixels with :func:`image_to_array`: 16-bit grey (PIL modes ``I;16*`` and ``I``) is divided
by 65535, every other mode goes through PIL's ``convert("RGB")`` (palette expanded, alpha dropped, CMYK
converted) and is divided by 255. What each reader does besides (alpha, EXIF orientation, its error messages)
stays with it.
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import PIL.ImageOps

__all__ = ["SIXTEEN_BIT_MODES", "open_image", "image_to_array", "to_u8"]

#: PIL modes of 16-bit grey images (16-bit PNGs open as ``I;16`` or, with older Pillow, ``I``).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def open_image(path: str | os.PathLike, exif_transpose: bool = False) -> PIL.Image.Image:
    """Open and decode ``path`` completely (the file is closed on return), optionally turned upright by its EXIF
    orientation. PIL's exceptions pass through, for each caller to word."""
    with PIL.Image.open(path) as image:
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
