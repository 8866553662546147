"""Paired super-resolution benchmarks: degrade held-out HQ photos, restore, and score against bicubic.

Two degradation chains:

* ``"bsrgan_light"``: the training pipeline (:func:`~iter_diffusers.training.degradations.degrade`), seeded per image;
* ``"heldout"``: a fixed chain no training run uses, to catch a model that only learnt its own degradations:
  Gaussian blur (σ = 1.2 HQ px), bicubic ×1/s, Gaussian noise (σ = 4/255, per channel, seeded), JPEG quality 75.

Scores (on the 0–255 scale, ``crop_border`` = s): PSNR and SSIM on Y, the mean-colour error (largest per-channel
difference of means, over the whole image and averaged over 32-px tiles), edge sharpness and flat-region noise
relative to the ground truth (:mod:`~iter_diffusers.evaluation.sharpness`) and, optionally, NIQE.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFilter

from ..utils.image_files import image_to_array, open_image, to_u8
from .metrics import calculate_color_error, calculate_psnr, calculate_ssim
from .sharpness import calculate_edge_sharpness, calculate_flat_noise

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
CHAINS = ("bsrgan_light", "heldout")


def list_images(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` (no hidden files such as macOS ``._`` sidecars, no sub-folders)."""
    paths = sorted(p for p in Path(folder).iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def load_hq(path: str | Path, max_side: int, scale: int) -> np.ndarray:
    """An HQ photo as uint8 RGB, centre-cropped to at most ``max_side`` and to multiples of ``scale``."""
    hq = to_u8(image_to_array(open_image(path)))
    h, w = (min(side, max_side) // scale * scale for side in hq.shape[:2])
    top, left = (hq.shape[0] - h) // 2, (hq.shape[1] - w) // 2
    return np.ascontiguousarray(hq[top : top + h, left : left + w])


def heldout_degrade(hq: np.ndarray, scale: int, seed: int) -> np.ndarray:
    """The ``"heldout"`` chain on a uint8 HQ image -> uint8 LQ of exactly 1/scale its size."""
    image = PIL.Image.fromarray(hq).filter(PIL.ImageFilter.GaussianBlur(1.2))
    image = image.resize((hq.shape[1] // scale, hq.shape[0] // scale), PIL.Image.BICUBIC)
    noisy = np.asarray(image, np.float32) + np.random.default_rng(seed).normal(0, 4.0, (image.height, image.width, 3))
    buffer = io.BytesIO()
    PIL.Image.fromarray(noisy.round().clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=75)
    return np.asarray(PIL.Image.open(buffer).convert("RGB"))


def make_pair(hq: np.ndarray, scale: int, chain: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(LQ, HQ) uint8 pair from an HQ photo with the named chain."""
    if chain == "heldout":
        return heldout_degrade(hq, scale, seed), hq
    if chain == "bsrgan_light":
        from ..training.degradations import BSRGANLightConfig, degrade

        lq, hq_crop = degrade(hq.astype(np.float32) / 255, scale, BSRGANLightConfig(), np.random.default_rng(seed))
        return to_u8(lq), to_u8(hq_crop)
    raise ValueError(f"unknown degradation chain {chain!r}; choose from {CHAINS}")


def bicubic(lq: np.ndarray, scale: int) -> np.ndarray:
    image = PIL.Image.fromarray(lq)
    return np.asarray(image.resize((image.width * scale, image.height * scale), PIL.Image.BICUBIC))


def score(sr: np.ndarray, hq: np.ndarray, crop_border: int, niqe: bool = False) -> dict[str, float]:
    """PSNR / SSIM (Y), global and 32-px-tile mean-colour error, edge sharpness, flat noise, and NIQE when asked."""
    row = {
        "psnr": calculate_psnr(sr, hq, crop_border=crop_border),
        "ssim": calculate_ssim(sr, hq, crop_border=crop_border),
        "color_error": calculate_color_error(sr, hq, crop_border=crop_border),
        "local_color_error": calculate_color_error(sr, hq, crop_border=crop_border, block=32),
        "edge_sharpness": calculate_edge_sharpness(sr, hq, crop_border=crop_border),
        "flat_noise": calculate_flat_noise(sr, hq, crop_border=crop_border),
    }
    if niqe:
        from .niqe import calculate_niqe

        row["niqe"] = calculate_niqe(sr, crop_border=crop_border)
    return row
