"""MATLAB's ``imresize`` with the bicubic kernel (antialiased when shrinking), in NumPy.

One implementation for the two places that need MATLAB's numbers: NIQE's second scale
(:mod:`iter_diffusers.evaluation.niqe`) and the x4 pre-downsample of the light BSRGAN degradation (basicsr's
``imresize_np``). Checked against BasicSR's MATLAB port in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["imresize"]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


def _contributions(in_len: int, out_len: int, scale: float, antialiasing: bool) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(out_len, P)`` and 0-based source indices ``(out_len, P)`` along one dimension."""
    kernel_width = 4.0
    if scale < 1 and antialiasing:
        # Stretch the kernel to low-pass before decimating.
        def kernel(x: np.ndarray) -> np.ndarray:
            return scale * _cubic(scale * x)

        kernel_width = kernel_width / scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)  # 1-based output coordinates, as in MATLAB
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)  # their position in input coordinates
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Out-of-range taps read the mirror image that repeats the edge sample: [1..n, n..1].
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    idx = mirror[np.mod(indices.astype(np.int64) - 1, mirror.size)]
    keep = np.any(weights != 0, axis=0)
    return weights[:, keep], idx[:, keep]


def _resize_axis(img: np.ndarray, axis: int, out_len: int, scale: float, antialiasing: bool) -> np.ndarray:
    weights, idx = _contributions(img.shape[axis], out_len, scale, antialiasing)
    moved = np.moveaxis(img, axis, 0)  # (in_len, ...)
    gathered = moved[idx]  # (out_len, P, ...)
    w = weights.reshape(weights.shape + (1,) * (moved.ndim - 1))
    out = np.sum(gathered * w, axis=1)
    return np.moveaxis(out, 0, axis)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: Sequence[int] | None = None,
    antialiasing: bool = True,
) -> np.ndarray:
    """MATLAB-compatible ``imresize(img, scale)`` / ``imresize(img, [h w])`` with the ``'bicubic'`` method.

    Works on ``H x W`` or ``H x W x C`` arrays; the result is float64 and is neither rounded nor clipped (MATLAB
    rounds and clips only for integer input; do it yourself if you need a ``uint8`` image).

    Args:
        img (`np.ndarray`): the image.
        scale (`float`, *optional*): one scale factor for both dimensions; the output size is
            ``ceil(scale * size)``.
        output_shape (`Sequence[int]`, *optional*): ``(out_h, out_w)`` instead of ``scale``.
        antialiasing (`bool`, defaults to `True`): widen the kernel when shrinking (MATLAB's default).
    """
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an H x W or H x W x C array, got shape {arr.shape}")
    h, w = arr.shape[:2]
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")
    if scale is not None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        scales = (float(scale), float(scale))
        out_hw = (int(math.ceil(h * scale)), int(math.ceil(w * scale)))
    else:
        out_hw = (int(output_shape[0]), int(output_shape[1]))
        if min(out_hw) <= 0:
            raise ValueError("output_shape must be positive")
        scales = (out_hw[0] / h, out_hw[1] / w)
    # MATLAB resizes along the dimension with the smaller scale first (rows first on a tie).
    order = sorted(range(2), key=lambda d: (scales[d], d))
    for d in order:
        arr = _resize_axis(arr, d, out_hw[d], scales[d], antialiasing)
    return arr
