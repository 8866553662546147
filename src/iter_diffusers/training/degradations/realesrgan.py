"""Real-ESRGAN's second-order degradation (Wang et al., 2021) with its published x4plus defaults.

Real-ESRGAN runs the second half on the GPU in torch; here everything is per image in numpy/cv2 (cv2 resize and
real JPEG instead of ``F.interpolate`` and DiffJPEG), which matches the distribution, not the bits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
from scipy import special

from ...utils.gaussian import gaussian_kernel_2d, kernel_grid, rotated_covariance, squared_mahalanobis
from ...utils.image_files import to_u8
from .config import SerializableConfig, check_distribution, check_interpolations, check_prob, check_range
from .ops import choose, choose_weighted, convolve_mirror, jpeg, resize

BLUR_KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


@dataclass(frozen=True)
class DegradationOrder:
    """One order of Real-ESRGAN's degradation: blur, resize, noise and JPEG (defaults: the first order's).

    Blur: type from ``kernel_list`` with ``kernel_prob``, sigmas ``U(blur_sigma)`` for both axes, rotation
    ``U(-pi, pi)``, shape ``beta`` from ``betag_range`` (generalised) or ``betap_range`` (plateau); with
    ``sinc_prob`` a circular low-pass (sinc) kernel replaces it. Resize: up/down/keep with ``resize_prob``, by a
    factor in ``resize_range``. Noise: Gaussian (sigma in 8-bit units from ``noise_range``) with
    ``gaussian_noise_prob``, otherwise Poisson scaled by ``poisson_scale_range``; grey with ``gray_noise_prob``.
    JPEG quality: ``U(jpeg_range)`` rounded.
    """

    kernel_list: tuple[str, ...] = BLUR_KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)

    def check(self, suffix: str) -> None:
        """Refuse impossible values; ``suffix`` ("" or "2") names the fields as Real-ESRGAN's options do."""
        for name in ("sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
            check_prob(name + suffix, getattr(self, name))
        if any(k not in BLUR_KERNEL_TYPES for k in self.kernel_list):
            raise ValueError(f"kernel_list{suffix} entries must be in {BLUR_KERNEL_TYPES}")
        check_distribution("kernel_prob" + suffix, self.kernel_prob, len(self.kernel_list))
        check_distribution("resize_prob" + suffix, self.resize_prob, 3)
        for name in ("blur_sigma", "resize_range", "noise_range", "poisson_scale_range", "jpeg_range",
                     "betag_range", "betap_range"):
            check_range(name + suffix, getattr(self, name), low=0)
        if self.blur_sigma[0] <= 0 or self.resize_range[0] <= 0:
            raise ValueError(f"blur_sigma{suffix} and resize_range{suffix} must be positive")


#: Real-ESRGAN x4plus's second order: milder blur, resizes around the target size, less noise.
SECOND_ORDER = DegradationOrder(blur_sigma=(0.2, 1.5), resize_prob=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
                                noise_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5))
_ORDER_FIELDS = tuple(f.name for f in dataclasses.fields(DegradationOrder))


@dataclass(frozen=True)
class RealESRGANConfig(SerializableConfig):
    """Parameters of Real-ESRGAN's second-order degradation (defaults = ``train_realesrgan_x4plus.yml``).

    ``first`` and ``second`` are the two :class:`DegradationOrder` s (the second's blur happens with
    ``second_blur_prob``); blur kernel sizes are drawn from ``kernel_sizes`` (odd) for both. In JSON
    (:meth:`to_dict`) the orders' fields are flat, the second's names ending in ``2``, as in Real-ESRGAN's options.

    The final stage resizes to the target size and applies a sinc filter (with ``final_sinc_prob``), with a JPEG
    of the second order's quality before or after (50/50). ``usm_sharpen`` degrades the unsharp-masked HQ, as
    Real-ESRGAN does (the returned HQ target is never sharpened).
    """

    pipeline: ClassVar[str] = "realesrgan"

    usm_sharpen: bool = True
    usm_weight: float = 0.5
    usm_radius: int = 50
    usm_threshold: float = 10.0
    interpolations: tuple[str, ...] = ("area", "linear", "cubic")
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    first: DegradationOrder = DegradationOrder()
    second: DegradationOrder = SECOND_ORDER
    second_blur_prob: float = 0.8
    final_sinc_prob: float = 0.8

    def __post_init__(self):
        for name in ("second_blur_prob", "final_sinc_prob"):
            check_prob(name, getattr(self, name))
        self.first.check("")
        self.second.check("2")
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive integers, got {self.kernel_sizes}")
        check_interpolations(self.interpolations)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key, order in (("", out.pop("first")), ("2", out.pop("second"))):
            fields = dataclasses.asdict(order).items()
            out.update({name + key: list(v) if isinstance(v, tuple) else v for name, v in fields})
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Inverse of :meth:`to_dict` (flat Real-ESRGAN names); unknown keys raise ``ValueError``."""
        data = dict(data)
        if {"first", "second"} & set(data):
            raise ValueError("RealESRGANConfig JSON names the orders' fields flat (kernel_list, kernel_list2, ...)")
        orders = {}
        for attribute, suffix, default in (("first", "", DegradationOrder()), ("second", "2", SECOND_ORDER)):
            given = {name: data.pop(name + suffix) for name in _ORDER_FIELDS if name + suffix in data}
            orders[attribute] = dataclasses.replace(default, **{k: tuple(v) if isinstance(v, list) else v
                                                                for k, v in given.items()})
        return dataclasses.replace(super().from_dict(data), **orders)


def _sinc_kernel(cutoff: float, size: int) -> np.ndarray:
    """Circularly symmetric 2-D low-pass (sinc / Airy) kernel with cutoff in radians (pi is Nyquist)."""
    r = np.linalg.norm(kernel_grid(size), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    kernel[size // 2, size // 2] = cutoff**2 / (4 * np.pi)
    return kernel / kernel.sum()


def _random_blur_kernel(rng: np.random.Generator, order: DegradationOrder, kernel_sizes: Sequence[int]) -> np.ndarray:
    """Real-ESRGAN's kernel of one degradation order: a sinc with ``sinc_prob``, else a random blur kernel."""
    size = int(choose(rng, kernel_sizes))
    if rng.random() < order.sinc_prob:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return _sinc_kernel(rng.uniform(low, math.pi), size)
    kind = choose_weighted(rng, order.kernel_list, order.kernel_prob)
    sigma_x = rng.uniform(*order.blur_sigma)
    if kind.endswith("aniso"):
        sigma_y, theta = rng.uniform(*order.blur_sigma), rng.uniform(-math.pi, math.pi)
    else:
        sigma_y, theta = sigma_x, 0.0
    cov = rotated_covariance(sigma_x**2, sigma_y**2, theta)
    if kind in ("iso", "aniso"):
        return gaussian_kernel_2d(size, cov)
    quad = squared_mahalanobis(size, cov)
    beta_range = order.betag_range if kind.startswith("generalized") else order.betap_range
    # Real-ESRGAN draws beta below or above 1 with equal chance
    beta = rng.uniform(beta_range[0], 1.0) if rng.random() < 0.5 else rng.uniform(1.0, beta_range[1])
    kernel = np.exp(-0.5 * quad**beta) if kind.startswith("generalized") else 1.0 / (quad**beta + 1.0)
    return kernel / kernel.sum()


def _usm_sharpen(img: np.ndarray, weight: float, radius: int, threshold: float) -> np.ndarray:
    """Unsharp masking as in Real-ESRGAN (``USMSharp``): sharpen where the high-pass exceeds ``threshold``/255."""
    radius += 1 - radius % 2
    blurred = cv2.GaussianBlur(img, (radius, radius), 0)
    residual = img - blurred
    mask = (np.abs(residual) * 255 > threshold).astype(np.float32)
    soft_mask = cv2.GaussianBlur(mask, (radius, radius), 0)
    sharp = np.clip(img + weight * residual, 0.0, 1.0)
    return soft_mask * sharp + (1 - soft_mask) * img


def _random_resize_factor(rng: np.random.Generator, probs: Sequence[float], factor_range: Sequence[float]) -> float:
    direction = choose_weighted(rng, ("up", "down", "keep"), probs)
    if direction == "up":
        return rng.uniform(1.0, factor_range[1])
    if direction == "down":
        return rng.uniform(factor_range[0], 1.0)
    return 1.0


def _random_noise(img: np.ndarray, rng: np.random.Generator, order: DegradationOrder) -> np.ndarray:
    """Real-ESRGAN's noise of one order: Gaussian (8-bit sigma) or Poisson (shot) noise, sometimes grey; clipped."""
    h, w = img.shape[:2]
    if rng.random() < order.gaussian_noise_prob:
        sigma = rng.uniform(*order.noise_range) / 255.0
        gray = rng.random() < order.gray_noise_prob
        noise = rng.standard_normal((h, w, 1) if gray else img.shape) * sigma
    else:
        noise_scale = rng.uniform(*order.poisson_scale_range)
        gray = rng.random() < order.gray_noise_prob
        source = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None] if gray else img
        source = np.clip(np.rint(source * 255.0), 0, 255) / 255.0
        levels = 2 ** math.ceil(math.log2(max(len(np.unique(source)), 1)))  # counts per unit intensity
        noise = (rng.poisson(source * levels) / levels - source) * noise_scale
    return np.clip(img + noise.astype(np.float32), 0.0, 1.0)


def _final_stage(img: np.ndarray, size_hw: tuple[int, int], cfg: RealESRGANConfig, rng: np.random.Generator):
    """Resize to the target with an optional sinc filter, and JPEG, in random order."""
    sinc = None
    if rng.random() < cfg.final_sinc_prob:
        sinc = _sinc_kernel(rng.uniform(math.pi / 3, math.pi), int(choose(rng, cfg.kernel_sizes)))
    jpeg_quality = rng.uniform(*cfg.second.jpeg_range)
    interpolation = choose(rng, cfg.interpolations)

    def resize_and_sinc(x: np.ndarray) -> np.ndarray:
        x = resize(x, size_hw, interpolation)
        return x if sinc is None else convolve_mirror(x, sinc)

    if rng.random() < 0.5:
        return jpeg(np.clip(resize_and_sinc(img), 0.0, 1.0), jpeg_quality)
    return resize_and_sinc(jpeg(img, jpeg_quality))


def degrade_realesrgan(hq: np.ndarray, scale: int, config: RealESRGANConfig, rng: np.random.Generator) -> np.ndarray:
    """Real-ESRGAN second-order degradation of a mod-cropped HQ image; returns the LQ image (``hq size / scale``)."""
    cfg = config
    h, w = hq.shape[:2]
    img = _usm_sharpen(hq, cfg.usm_weight, cfg.usm_radius, cfg.usm_threshold) if cfg.usm_sharpen else hq

    # first order: blur, resize, noise, JPEG
    first, second = cfg.first, cfg.second
    img = convolve_mirror(img, _random_blur_kernel(rng, first, cfg.kernel_sizes))
    factor = _random_resize_factor(rng, first.resize_prob, first.resize_range)
    img = resize(img, (int(h * factor), int(w * factor)), choose(rng, cfg.interpolations))
    img = _random_noise(img, rng, first)
    img = jpeg(img, rng.uniform(*first.jpeg_range))

    # second order: optional blur, resize around the target size, noise
    if rng.random() < cfg.second_blur_prob:
        img = convolve_mirror(img, _random_blur_kernel(rng, second, cfg.kernel_sizes))
    factor = _random_resize_factor(rng, second.resize_prob, second.resize_range)
    img = resize(img, (int(h / scale * factor), int(w / scale * factor)), choose(rng, cfg.interpolations))
    img = _random_noise(img, rng, second)

    img = _final_stage(img, (h // scale, w // scale), cfg, rng)
    return to_u8(img).astype(np.float32) / 255.0
