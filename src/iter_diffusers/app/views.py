"""The images the page shows, from a restoration: the before/after pair and the per-step panels."""

from __future__ import annotations

import numpy as np
import PIL.Image

from ..cli.images import LoadedImage
from ..utils.image_files import to_u8

PANEL_GAP = 4  # pixels between a step's image and its keep-mask


def to_pil(rgb: np.ndarray) -> PIL.Image.Image:
    """(H, W, 3) float in [0, 1] -> 8-bit RGB."""
    return PIL.Image.fromarray(to_u8(rgb), mode="RGB")


def before_image(source: LoadedImage, size: tuple[int, int]) -> PIL.Image.Image:
    """The input enlarged to the output's ``size`` (bicubic): the "before" of the comparison."""
    return to_pil(source.rgb).resize(size, PIL.Image.Resampling.BICUBIC)


def mask_image(kept: np.ndarray, pixels_per_token: int, size: tuple[int, int]) -> PIL.Image.Image:
    """A (h, w) keep-mask over tokens as a grey image of ``size``: white = kept, black = re-predicted by φ_r."""
    block = np.ones((pixels_per_token, pixels_per_token), dtype=np.uint8)
    full = np.kron(kept.astype(np.uint8) * 255, block)
    return PIL.Image.fromarray(full[: size[1], : size[0]], mode="L")


def step_panel(image: PIL.Image.Image, mask: PIL.Image.Image) -> PIL.Image.Image:
    """One gallery entry: the image after a step | the keep-mask used in it."""
    panel = PIL.Image.new("RGB", (2 * image.width + PANEL_GAP, image.height), "white")
    panel.paste(image.convert("RGB"), (0, 0))
    panel.paste(mask.convert("RGB"), (image.width + PANEL_GAP, 0))
    return panel
