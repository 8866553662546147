"""``iter-sr``'s image files: read with what is needed to save the result like the input (alpha, grey, bit depth,
ICC profile), composed back in the output format's terms, and written atomically."""

from __future__ import annotations

import os
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image

from ..utils.image_files import SIXTEEN_BIT_MODES, ImageTooLargeError, image_to_array, open_image, to_u8
from .console import ImageError, one_line

# What each output extension can hold. webp has no grayscale mode (grey is written as RGB).
FORMATS = {
    "png": dict(pil="PNG", alpha=True, bits16=True, gray=True),
    "jpg": dict(pil="JPEG", alpha=False, bits16=False, gray=True),
    "jpeg": dict(pil="JPEG", alpha=False, bits16=False, gray=True),
    "webp": dict(pil="WEBP", alpha=True, bits16=False, gray=False),
    "tif": dict(pil="TIFF", alpha=True, bits16=True, gray=True),
    "tiff": dict(pil="TIFF", alpha=True, bits16=True, gray=True),
    "bmp": dict(pil="BMP", alpha=False, bits16=False, gray=True),
}
EXT_CHOICES = ("png", "jpg", "webp", "tiff", "auto")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's convert("L")


@dataclass
class LoadedImage:
    """An input image ready for the pipeline, with what is needed to save the result like it."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    alpha: PIL.Image.Image | None = None  # mode "L", (W, H); None when the input has no transparency
    grayscale: bool = False
    bit_depth: int = 8  # 8 or 16
    icc_profile: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


@contextmanager
def _warnings_to(warn):
    """Python warnings raised inside (Pillow's "Corrupt EXIF data", ...) as one-line ``warn`` calls, in place of
    Python's two lines with a source line; ``warn=None`` leaves them to Python."""
    if warn is None:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for message in dict.fromkeys(one_line(item.message) for item in caught):
        warn(message)


def load_image(path: Path, max_pixels: int | None = None, warn=None) -> LoadedImage:
    """Read an image file: EXIF orientation applied, RGB float in [0, 1] plus alpha, grey and bit-depth flags.

    ``max_pixels``: the largest image read, checked from the header, in place of Pillow's decompression-bomb
    guard (0: no limit; None: Pillow's guard, whose warning goes to stderr as it is). ``warn``: called with each
    warning of the reader as one line (None: Python's warnings).
    """
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        with _warnings_to(warn):
            image = open_image(path, exif_transpose=True, max_pixels=max_pixels)
    except ImageTooLargeError as error:
        pixels = error.size[0] * error.size[1]
        raise ImageError(f"{error} (a guard against decompression bombs); pass --max_pixels {pixels} or 0 "
                         "(no limit) to read it") from None
    except PIL.UnidentifiedImageError:
        raise ImageError("not a readable image (unknown format or corrupt file)") from None
    except Exception as error:  # truncated files, broken chunks, decompression bombs, bad EXIF, ...
        raise ImageError(f"cannot read the image: {one_line(error) or type(error).__name__}") from None

    icc = image.info.get("icc_profile")
    mode = image.mode
    if image.width == 0 or image.height == 0:
        raise ImageError(f"empty image ({image.width}x{image.height})")
    if mode in SIXTEEN_BIT_MODES:
        return LoadedImage(image_to_array(image), None, True, 16, icc)
    if mode in ("F", "I;32", "I;32L", "I;32B"):
        raise ImageError(f"unsupported image mode {mode} (32-bit); convert it to 8- or 16-bit first")

    transparent = "transparency" in image.info
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA" if (mode == "PA" or transparent) else "RGB")
    elif mode in ("1", "L") and transparent:
        image = image.convert("LA")
    elif mode == "RGB" and transparent:
        image = image.convert("RGBA")

    mode = image.mode
    if mode in ("1", "L", "LA", "La"):
        grayscale = True
        alpha = image.convert("LA").getchannel("A") if mode in ("LA", "La") else None
        rgb = image_to_array(image.convert("L"))
    else:
        grayscale = False
        alpha = image.convert("RGBA").getchannel("A") if mode in ("RGBA", "RGBa", "LA", "PA") else None
        rgb = image_to_array(image)
        if mode not in ("RGB", "RGBA", "RGBa", "RGBX"):
            icc = None  # e.g. a CMYK profile no longer describes the RGB pixels
    return LoadedImage(np.ascontiguousarray(rgb), alpha, grayscale, 8, icc)


def compose_output(sr: np.ndarray, source: LoadedImage, ext: str, warn=None):
    """The result (sH, sW, 3) float in [0, 1] as a PIL image like ``source``, for extension ``ext``.

    Returns ``(image, pil_format, save_kwargs_without_quality)``.
    """
    warn = warn or (lambda message: None)
    caps = FORMATS[ext]
    sr = np.clip(np.nan_to_num(sr.astype(np.float32), nan=0.0), 0.0, 1.0)
    if source.grayscale and caps["gray"]:
        luma = np.clip(sr @ _LUMA, 0.0, 1.0)
        if source.bit_depth == 16 and caps["bits16"]:
            image = PIL.Image.fromarray(np.round(luma * 65535.0).astype(np.uint16))  # mode I;16
        else:
            image = PIL.Image.fromarray(to_u8(luma), mode="L")
    else:
        image = PIL.Image.fromarray(to_u8(sr), mode="RGB")
    if source.bit_depth == 16 and not caps["bits16"]:
        warn(f"saved with 8 bits per channel ({ext} cannot hold 16-bit images; use --ext png to keep them)")

    if source.alpha is not None:
        if caps["alpha"]:
            alpha = source.alpha.resize(image.size, PIL.Image.Resampling.BICUBIC)
            if image.mode == "L":
                image = PIL.Image.merge("LA", (image, alpha))
            else:
                image = PIL.Image.merge("RGBA", (*image.split(), alpha))
        else:
            warn(f"transparency dropped ({ext} has no alpha channel; use --ext png or webp to keep it)")

    kwargs = {}
    output_gray = image.mode in ("L", "LA", "I;16")
    if source.icc_profile and output_gray == source.grayscale:
        kwargs["icc_profile"] = source.icc_profile
    return image, caps["pil"], kwargs


def atomic_save(image: PIL.Image.Image, path: Path, pil_format: str, **save_kwargs) -> None:
    """Write ``image`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    created = False
    try:
        with open(temporary, "xb") as handle:  # "x": never clobbers anything; permissions follow the umask
            created = True
            image.save(handle, format=pil_format, **save_kwargs)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if created:
            try:
                temporary.unlink()
            except OSError:
                pass
        raise
