"""The elementary operations both degradation models are built from: crop, resize, filter, JPEG, random picks.

All work on HWC float32 RGB arrays in [0, 1] with OpenCV and keep the channel axis, which cv2 drops for
single-channel results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ...utils.image_files import to_u8

CV2_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale`` (the corrected official crop)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _keep_channel_axis(out: np.ndarray, img: np.ndarray) -> np.ndarray:
    return out[..., None] if out.ndim == 2 and img.ndim == 3 else out


def resize(img: np.ndarray, size_hw: tuple[int, int], interpolation: str) -> np.ndarray:
    """cv2 resize to ``(height, width)`` (at least one pixel)."""
    h, w = max(1, int(size_hw[0])), max(1, int(size_hw[1]))
    return _keep_channel_axis(cv2.resize(img, (w, h), interpolation=CV2_INTERPOLATION[interpolation]), img)


def convolve_mirror(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.convolve(img, kernel[..., None], mode='mirror')`` per channel, via the much faster cv2.

    True convolution (flipped kernel) with reflect-101 borders; the anchor ``(k - 1) // 2`` reproduces SciPy's
    origin for even kernel sizes too, so the official half-pixel shift of even kernels is preserved. For odd,
    point-symmetric kernels (all of Real-ESRGAN's) this is also basicsr's ``filter2D``.
    """
    kh, kw = kernel.shape
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    out = cv2.filter2D(img, -1, flipped, anchor=((kw - 1) // 2, (kh - 1) // 2), borderType=cv2.BORDER_REFLECT_101)
    return _keep_channel_axis(out, img)


def jpeg(img: np.ndarray, quality: float) -> np.ndarray:
    """Real JPEG round trip of an RGB float image at an integer quality (cv2/libjpeg, 4:2:0), back to float32."""
    bgr = cv2.cvtColor(to_u8(img), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(round(quality))])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return decoded.astype(np.float32) / 255.0


def choose(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    """One of ``options``, uniformly."""
    return options[int(rng.integers(len(options)))]


def choose_weighted(rng: np.random.Generator, options: Sequence[Any], weights: Sequence[float]) -> Any:
    """One of ``options`` with probabilities proportional to ``weights``."""
    p = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]
