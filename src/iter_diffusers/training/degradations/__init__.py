"""On-the-fly synthesis of low-quality (LQ) training inputs from high-quality (HQ) images.

Two blind-SR degradation models, one module each, both working per image on numpy arrays (HWC, float32, RGB,
values in [0, 1]) with OpenCV/SciPy, and both drawing every random number from a caller-supplied
``numpy.random.Generator``, so a sample is reproducible from its seed and data-loader workers never share a
global RNG:

* :class:`BSRGANLightConfig` (:mod:`.bsrgan`): the light BSRGAN model of the official ITER code, the default;
* :class:`RealESRGANConfig` (:mod:`.realesrgan`): Real-ESRGAN's second-order model.

They share the elementary operations of :mod:`.ops` and the config helpers of :mod:`.config`. Entry point:
:func:`degrade` ``(hq, scale, config, rng) -> (lq, hq_cropped)``. The HQ image is first cropped to a multiple of
``scale`` and the LQ output is always exactly ``hq_cropped.shape[:2] // scale``, quantised to 8 bits.

Also here: :func:`paired_random_crop`, :func:`augment` (basicsr's flips/transpose) and
:func:`paired_random_resize` (:mod:`.paired`), and :func:`imresize_matlab`, the package's MATLAB ``imresize``
(:func:`iter_diffusers.utils.imresize.imresize`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...utils.imresize import imresize as imresize_matlab
from .bsrgan import BSRGANLightConfig, degrade_bsrgan_light
from .ops import mod_crop
from .paired import augment, paired_random_crop, paired_random_resize
from .realesrgan import RealESRGANConfig, degrade_realesrgan

__all__ = [
    "BSRGANLightConfig",
    "RealESRGANConfig",
    "DegradationConfig",
    "degradation_config_from_dict",
    "degrade",
    "degrade_bsrgan_light",
    "degrade_realesrgan",
    "imresize_matlab",
    "paired_random_crop",
    "paired_random_resize",
    "augment",
    "mod_crop",
]

DegradationConfig = BSRGANLightConfig | RealESRGANConfig
_MODELS = {BSRGANLightConfig: degrade_bsrgan_light, RealESRGANConfig: degrade_realesrgan}
_CONFIG_CLASSES = {cls.pipeline: cls for cls in _MODELS}


def degradation_config_from_dict(data: Mapping[str, Any]) -> DegradationConfig:
    """Rebuild a config from :meth:`to_dict` output, dispatching on its ``"pipeline"`` key."""
    pipeline = data.get("pipeline")
    if pipeline not in _CONFIG_CLASSES:
        raise ValueError(f"'pipeline' must be one of {sorted(_CONFIG_CLASSES)}, got {pipeline!r}")
    return _CONFIG_CLASSES[pipeline].from_dict(data)


def _checked_hq(hq: np.ndarray, scale: int) -> np.ndarray:
    """``hq`` as contiguous float32, mod-cropped to ``scale``; raises on images that cannot be degraded."""
    if hq.ndim != 3 or hq.shape[2] != 3:
        raise ValueError(f"hq must be an HxWx3 RGB image, got shape {hq.shape}")
    if hq.dtype == np.uint8:
        hq = hq.astype(np.float32) / 255.0
    hq = np.ascontiguousarray(mod_crop(hq, scale), dtype=np.float32)
    if hq.shape[0] < scale or hq.shape[1] < scale:
        raise ValueError(f"hq ({hq.shape[0]}x{hq.shape[1]}) is smaller than the scale {scale}")
    return hq


def degrade(
    hq: np.ndarray,
    scale: int,
    config: DegradationConfig | Mapping[str, Any] | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthesise the LQ counterpart of an HQ image.

    Args:
        hq (`np.ndarray`): HWC RGB image, float in [0, 1] (uint8 is accepted and rescaled).
        scale (`int`): integer SR factor (ITER uses 2 and 4).
        config (`BSRGANLightConfig`, `RealESRGANConfig`, `dict` or `None`): the degradation model; `None` is
            `BSRGANLightConfig()` (the official choice), a dict comes from a config's ``to_dict``.
        rng (`np.random.Generator`): the sample's generator, e.g. ``np.random.default_rng([seed, epoch,
            index])``; nothing else is used.

    Returns:
        ``(lq, hq_cropped)``: float32 images in [0, 1]; ``hq_cropped`` is ``hq`` cropped to multiples of ``scale``
        and ``lq`` has exactly ``hq_cropped.shape[:2] // scale`` pixels, with values on the 8-bit grid.
    """
    if config is None:
        config = BSRGANLightConfig()
    elif isinstance(config, Mapping):
        config = degradation_config_from_dict(config)
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (np.random.default_rng(seed))")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if type(config) not in _MODELS:
        raise TypeError(f"Unsupported degradation config {type(config).__name__}")
    scale = int(scale)
    hq = _checked_hq(hq, scale)
    lq = _MODELS[type(config)](hq, scale, config, rng)
    expected = (hq.shape[0] // scale, hq.shape[1] // scale, 3)
    if lq.shape != expected:  # guaranteed by construction; a cheap guard against future edits
        raise RuntimeError(f"degradation produced {lq.shape}, expected {expected}")
    return np.ascontiguousarray(lq, dtype=np.float32), hq
