"""Two full-reference checks of "looks restored": are edges as sharp as the ground truth's, and are flat regions
left flat?

PSNR and SSIM reward the blur of a conditional mean, and no-reference scores such as NIQE reward invented texture,
so neither says whether an upscale is *sharper than bicubic without speckle*. These two numbers measure exactly that,
on the BT.601 Y channel (0–255 scale) after ``crop_border``; the ground truth ``hq`` chooses where to look (and, for
edges, sets the scale):

* :func:`calculate_edge_sharpness`: on the ground truth's edges (the pixels whose gradient magnitude is in its top
  ``edge_fraction``), the mean gradient magnitude of ``sr`` divided by that of ``hq``. 1 is the ground truth's
  sharpness, a blurry upscale scores well below 1, and values above 1 mean overshoot (ringing, halos). A reference
  without edges worth the name (mean gradient on them under 2 grey levels per pixel) gives NaN: no ratio to take;
* :func:`calculate_flat_noise`: on the ground truth's flattest pixels (local standard deviation, Gaussian σ = 3 px,
  in its bottom ``flat_fraction``), the RMS of ``sr``'s high-pass residual (the image minus its Gaussian blur, σ = 1.5 px), in
  grey levels. Compare it with bicubic's on the same photo: invented speckle lifts it above, a clean upscale stays
  at or below. The ground truth's own value (its grain) is usually higher than both.
"""

from __future__ import annotations

import numpy as np

from ..utils.gaussian import gaussian_kernel_1d
from .metrics import _pair, correlate_separable

__all__ = ["calculate_edge_sharpness", "calculate_flat_noise"]

MIN_EDGE_GRADIENT = 2.0  # grey levels per pixel: below it a reference has no edges to compare sharpness on
_BLUR = gaussian_kernel_1d(9, 1.5)  # the high-pass residual's low-pass
# Flatness is judged over twice the residual's reach, so a change on an edge cannot leak into "flat" pixels.
_NEIGHBOURHOOD = gaussian_kernel_1d(17, 3.0)


def _luma_pair(sr: np.ndarray, hq: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    y_sr, y_hq = (y[:, :, 0] for y in _pair(sr, hq, crop_border, test_y_channel=True))
    if min(y_sr.shape) < 3:
        raise ValueError(f"need at least 3x3 pixels after cropping, got {y_sr.shape[0]}x{y_sr.shape[1]}")
    if not (np.isfinite(y_sr).all() and np.isfinite(y_hq).all()):
        raise ValueError("images with NaN or infinite values")
    return y_sr, y_hq


def _gradient_magnitude(y: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(y)
    return np.hypot(gx, gy)


def _blur(y: np.ndarray, kernel: np.ndarray = _BLUR) -> np.ndarray:
    return correlate_separable(y, kernel, mode="nearest")


def calculate_edge_sharpness(sr: np.ndarray, hq: np.ndarray, crop_border: int = 0, edge_fraction: float = 0.1) -> float:
    """Mean gradient magnitude of ``sr`` over ``hq``'s strongest edges, relative to ``hq``'s (1 = as sharp; NaN
    when ``hq`` has no edges)."""
    if not 0 < edge_fraction <= 1:
        raise ValueError(f"edge_fraction must be in (0, 1], got {edge_fraction}")
    y_sr, y_hq = _luma_pair(sr, hq, crop_border)
    grad_sr, grad_hq = _gradient_magnitude(y_sr), _gradient_magnitude(y_hq)
    # ">= quantile" alone would take every pixel of a mostly flat reference (quantile 0): edges have a gradient
    edges = (grad_hq >= np.quantile(grad_hq, 1 - edge_fraction)) & (grad_hq > 0)
    if not edges.any() or grad_hq[edges].mean() < MIN_EDGE_GRADIENT:
        return float("nan")
    return float(grad_sr[edges].mean() / grad_hq[edges].mean())


def calculate_flat_noise(sr: np.ndarray, hq: np.ndarray, crop_border: int = 0, flat_fraction: float = 0.3) -> float:
    """RMS high-pass residual of ``sr`` (grey levels) over ``hq``'s flattest ``flat_fraction`` of pixels."""
    if not 0 < flat_fraction <= 1:
        raise ValueError(f"flat_fraction must be in (0, 1], got {flat_fraction}")
    y_sr, y_hq = _luma_pair(sr, hq, crop_border)
    local_var = _blur(y_hq**2, _NEIGHBOURHOOD) - _blur(y_hq, _NEIGHBOURHOOD) ** 2
    local_std = np.sqrt(np.maximum(local_var, 0))
    flat = local_std <= np.quantile(local_std, flat_fraction)
    residual = y_sr - _blur(y_sr)
    return float(np.sqrt(np.mean(residual[flat] ** 2)))
