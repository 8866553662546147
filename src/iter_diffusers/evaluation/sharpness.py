"""Two full-reference checks of "looks restored": are edges as sharp as the ground truth's, and are flat regions
left flat?

PSNR and SSIM reward the blur of a conditional mean, and no-reference scores such as NIQE reward invented texture,
so neither says whether an upscale is *sharper than bicubic without speckle*. These two numbers measure exactly that,
on the BT.601 Y channel (0–255 scale) after ``crop_border``, using the ground truth ``hq`` only to choose where to
look:

* :func:`calculate_edge_sharpness`: on the ground truth's edges (the pixels whose gradient magnitude is in its top
  ``edge_fraction``), the mean gradient magnitude of ``sr`` divided by that of ``hq``. 1 is the ground truth's
  sharpness, a blurry upscale scores well below 1, and values above 1 mean overshoot (ringing, halos);
* :func:`calculate_flat_noise`: on the ground truth's flattest pixels (local standard deviation, Gaussian σ = 3 px,
  in its bottom ``flat_fraction``), the RMS of ``sr``'s high-pass residual (the image minus its Gaussian blur, σ = 1.5 px), in
  grey levels. Invented speckle raises it above the ground truth's own value; a smooth upscale stays near it.
"""

from __future__ import annotations

import numpy as np

from ..utils.gaussian import gaussian_kernel_1d
from .metrics import correlate_separable, prepare_for_metric

__all__ = ["calculate_edge_sharpness", "calculate_flat_noise"]

_BLUR = gaussian_kernel_1d(9, 1.5)  # the high-pass residual's low-pass
# Flatness is judged over twice the residual's reach, so a change on an edge cannot leak into "flat" pixels.
_NEIGHBOURHOOD = gaussian_kernel_1d(17, 3.0)


def _luma_pair(sr: np.ndarray, hq: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    if np.shape(sr) != np.shape(hq):
        raise ValueError(f"image shapes differ: {np.shape(sr)} vs {np.shape(hq)}")
    return prepare_for_metric(sr, crop_border)[:, :, 0], prepare_for_metric(hq, crop_border)[:, :, 0]


def _gradient_magnitude(y: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(y)
    return np.hypot(gx, gy)


def _blur(y: np.ndarray, kernel: np.ndarray = _BLUR) -> np.ndarray:
    return correlate_separable(y, kernel, mode="nearest")


def calculate_edge_sharpness(sr: np.ndarray, hq: np.ndarray, crop_border: int = 0, edge_fraction: float = 0.1) -> float:
    """Mean gradient magnitude of ``sr`` over ``hq``'s strongest edges, relative to ``hq``'s (1 = as sharp)."""
    if not 0 < edge_fraction <= 1:
        raise ValueError(f"edge_fraction must be in (0, 1], got {edge_fraction}")
    y_sr, y_hq = _luma_pair(sr, hq, crop_border)
    grad_sr, grad_hq = _gradient_magnitude(y_sr), _gradient_magnitude(y_hq)
    if not grad_hq.any():
        raise ValueError("the reference image has no edges (it is flat)")
    # ">= quantile" alone would take every pixel of a mostly flat reference (quantile 0): edges have a gradient
    edges = (grad_hq >= np.quantile(grad_hq, 1 - edge_fraction)) & (grad_hq > 0)
    reference = grad_hq[edges].mean()
    return float(grad_sr[edges].mean() / reference)


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
