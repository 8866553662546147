"""Full-reference image metrics: PSNR and SSIM, computed the way super-resolution papers report them.

The conventions follow the MATLAB evaluation code used by the SR literature (and mirrored by BasicSR's
``calculate_psnr`` / ``calculate_ssim``):

* images are ``H x W x 3`` RGB (or ``H x W`` / ``H x W x 1`` grey), either ``uint8`` in ``[0, 255]`` or floating
  point in ``[0, 1]``; both are brought to the ``[0, 255]`` scale in float64 before anything else;
* ``crop_border`` pixels are removed from every edge first;
* with ``test_y_channel=True`` (the default) the metric is computed on the luma of ITU-R BT.601 "studio swing"
  YCbCr, exactly MATLAB's ``rgb2ycbcr``: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with RGB in ``[0, 1]``, so
  Y lies in ``[16, 235]``; the value is *not* rounded. Grey images are used as they are. With
  ``test_y_channel=False`` the metric is computed on every channel (SSIM averages the per-channel values);
* SSIM is Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``,
  ``L = 255``, evaluated in float64 on the "valid" part of the image only (no padding) and averaged.

Only NumPy is needed.
"""

from __future__ import annotations

import math
import numpy as np

from ..utils.gaussian import gaussian_kernel_1d

__all__ = [
    "rgb2ycbcr_y",
    "to_float255",
    "prepare_for_metric",
    "calculate_psnr",
    "calculate_ssim",
    "calculate_color_error",
    "correlate_separable",
]

# MATLAB rgb2ycbcr, Y row: coefficients for R, G, B in [0, 1]; offset 16 (out of 255).
_Y_COEFFS_RGB = np.array([65.481, 128.553, 24.966], dtype=np.float64)


def to_float255(img: np.ndarray) -> np.ndarray:
    """Return ``img`` as float64 on the ``[0, 255]`` scale.

    ``uint8`` (and other integer types holding 8-bit values) are converted as they are; floating point images are
    taken to be in ``[0, 1]`` and multiplied by 255 (values are not clipped).
    """
    img = np.asarray(img)
    if img.dtype == np.bool_:
        raise TypeError("boolean images are not supported")
    if np.issubdtype(img.dtype, np.integer):
        return img.astype(np.float64)
    if np.issubdtype(img.dtype, np.floating):
        return img.astype(np.float64) * 255.0
    raise TypeError(f"unsupported image dtype {img.dtype}")


def rgb2ycbcr_y(img: np.ndarray) -> np.ndarray:
    """Luma (Y) of MATLAB's ``rgb2ycbcr`` for an ``H x W x 3`` RGB image.

    Accepts ``uint8`` in ``[0, 255]`` or float in ``[0, 1]``; returns an ``H x W`` float64 array on the
    ``[0, 255]`` scale (Y in ``[16, 235]``), unrounded.
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {img.shape}")
    rgb01 = to_float255(img) / 255.0
    return rgb01 @ _Y_COEFFS_RGB + 16.0


def _check_image(img: np.ndarray, name: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        return img[:, :, None]
    if img.ndim == 3 and img.shape[2] in (1, 3):
        return img
    raise ValueError(f"{name}: expected an H x W, H x W x 1 or H x W x 3 image, got shape {img.shape}")


def prepare_for_metric(img: np.ndarray, crop_border: int = 0, test_y_channel: bool = True) -> np.ndarray:
    """Crop, convert to the ``[0, 255]`` scale and (optionally) take the Y channel.

    Returns a float64 ``H x W x C`` array (``C == 1`` for Y or grey input).
    """
    img = _check_image(img, "image")
    crop_border = int(crop_border)
    if crop_border < 0:
        raise ValueError("crop_border must be >= 0")
    if crop_border > 0:
        if img.shape[0] <= 2 * crop_border or img.shape[1] <= 2 * crop_border:
            raise ValueError(f"crop_border={crop_border} leaves nothing of a {img.shape[0]}x{img.shape[1]} image")
        img = img[crop_border:-crop_border, crop_border:-crop_border, :]
    if test_y_channel and img.shape[2] == 3:
        return rgb2ycbcr_y(img)[:, :, None]
    return to_float255(img)


def _pair(img: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    a = _check_image(img, "img")
    b = _check_image(img2, "img2")
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {np.asarray(img).shape} vs {np.asarray(img2).shape}")
    return (
        prepare_for_metric(a, crop_border, test_y_channel),
        prepare_for_metric(b, crop_border, test_y_channel),
    )


def calculate_psnr(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB (peak 255), ``inf`` for identical images.

    Args:
        img, img2: images of equal shape, ``uint8`` RGB in ``[0, 255]`` or float RGB in ``[0, 1]``
            (``H x W x 3``; grey ``H x W`` also accepted).
        crop_border: pixels removed from each edge before the computation.
        test_y_channel: compute on the BT.601 Y channel (default) instead of on RGB.
    """
    a, b = _pair(img, img2, crop_border, test_y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * math.log10(255.0 * 255.0 / mse)


def correlate_separable(img: np.ndarray, kernel: np.ndarray, mode: str = "valid") -> np.ndarray:
    """2-D correlation of a 2-D array with ``outer(kernel, kernel)``, done as two 1-D passes.

    ``mode="valid"`` keeps only the outputs whose window lies inside the image; ``mode="nearest"`` pads by
    replicating the edge pixels first (MATLAB ``imfilter(..., 'replicate')``) and returns the input size.
    """
    img = np.asarray(img, dtype=np.float64)
    k = np.asarray(kernel, dtype=np.float64)
    n = k.size
    if mode == "nearest":
        lo = n // 2
        hi = n - 1 - lo
        img = np.pad(img, ((lo, hi), (lo, hi)), mode="edge")
    elif mode != "valid":
        raise ValueError(f"unknown mode {mode!r}")
    h, w = img.shape
    if h < n or w < n:
        raise ValueError(f"image of size {h}x{w} is smaller than the {n}x{n} window")
    tmp = np.zeros((h - n + 1, w), dtype=np.float64)
    for i in range(n):
        tmp += k[i] * img[i : i + h - n + 1, :]
    out = np.zeros((h - n + 1, w - n + 1), dtype=np.float64)
    for j in range(n):
        out += k[j] * tmp[:, j : j + w - n + 1]
    return out


_SSIM_WINDOW = gaussian_kernel_1d(11, 1.5)


def _ssim_single(a: np.ndarray, b: np.ndarray) -> float:
    c1 = (0.01 * 255.0) ** 2
    c2 = (0.03 * 255.0) ** 2
    win = _SSIM_WINDOW
    mu1 = correlate_separable(a, win)
    mu2 = correlate_separable(b, win)
    mu1_sq = mu1 * mu1
    mu2_sq = mu2 * mu2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = correlate_separable(a * a, win) - mu1_sq
    sigma2_sq = correlate_separable(b * b, win) - mu2_sq
    sigma12 = correlate_separable(a * b, win) - mu1_mu2
    ssim_map = ((2.0 * mu1_mu2 + c1) * (2.0 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def calculate_ssim(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = True) -> float:
    """Structural similarity (Wang et al. 2004), 11x11 Gaussian window with sigma 1.5, float64.

    Same arguments as :func:`calculate_psnr`. For RGB (``test_y_channel=False``) the per-channel SSIMs are
    averaged. Images must be at least 11x11 after cropping.
    """
    a, b = _pair(img, img2, crop_border, test_y_channel)
    if a.shape[0] < 11 or a.shape[1] < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 pixels after cropping, got {a.shape[0]}x{a.shape[1]}")
    return float(np.mean([_ssim_single(a[:, :, c], b[:, :, c]) for c in range(a.shape[2])]))


def calculate_color_error(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, block: int = 0) -> float:
    """Mean-colour error on the 0–255 scale: the largest per-channel difference of RGB means.

    With ``block > 0`` the means are taken over ``block × block`` tiles (a remainder at the edges is dropped) and the
    per-channel differences are averaged over tiles before the largest is taken: a local hue shift that a global
    mean hides (a red object turning orange in an otherwise right image) shows here.
    """
    a, b = _pair(img, img2, crop_border, test_y_channel=False)
    if a.ndim != 3:
        raise ValueError("calculate_color_error needs RGB images")
    if block > 0:
        rows, cols = a.shape[0] // block, a.shape[1] // block
        if rows == 0 or cols == 0:
            raise ValueError(f"block {block} is larger than the image ({a.shape[0]}x{a.shape[1]})")

        def tile_means(x: np.ndarray) -> np.ndarray:
            return x[: rows * block, : cols * block].reshape(rows, block, cols, block, 3).mean(axis=(1, 3))

        return float(np.abs(tile_means(a) - tile_means(b)).mean(axis=(0, 1)).max())
    return float(np.abs(a.mean(axis=(0, 1)) - b.mean(axis=(0, 1))).max())
