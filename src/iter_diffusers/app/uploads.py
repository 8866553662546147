"""Read an uploaded image for the web demo: size limit first, then the same reader as ``iter-sr``."""

from __future__ import annotations

from pathlib import Path

import PIL.Image

from ..cli.console import ImageError
from ..cli.images import LoadedImage, load_image

#: Largest input the page accepts (LQ pixels): 1 MP, e.g. 1000×1000, a ×4 output of 16 MP.
MAX_INPUT_PIXELS = 1_000_000


class UploadError(ValueError):
    """An upload the demo cannot use; its message is written for the page."""


def read_upload(path: str | Path | None, max_pixels: int = MAX_INPUT_PIXELS) -> LoadedImage:
    """The image at ``path`` as ``iter-sr`` reads it (EXIF orientation, grey, alpha, 16-bit), or an UploadError.

    The size is checked from the file's header, before any pixel is decoded.
    """
    if path is None:
        raise UploadError("Upload an image or pick an example first.")
    path = Path(path)
    width, height = _header_size(path)
    if width * height > max_pixels:
        raise UploadError(
            f"{path.name} is {width}×{height} pixels ({width * height / 1e6:.1f} MP); this demo takes images of "
            f"up to {max_pixels / 1e6:g} MP (e.g. {_side(max_pixels)}×{_side(max_pixels)}). Crop or downscale it, "
            "or use the iter-sr command (its --max_pixels lifts its own limit)."
        )
    try:
        return load_image(path)
    except ImageError as error:
        raise UploadError(f"{path.name}: {error}.") from None


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only (PIL decodes pixels lazily)."""
    try:
        with PIL.Image.open(path) as image:
            return image.size
    except PIL.Image.DecompressionBombError:
        raise UploadError(f"{path.name} is far too large (over {PIL.Image.MAX_IMAGE_PIXELS * 2:,} pixels).") from None
    except (PIL.UnidentifiedImageError, OSError, ValueError):
        raise UploadError(f"{path.name} is not a readable image (unknown format or corrupt file).") from None


def _side(pixels: int) -> int:
    return int(pixels**0.5)
