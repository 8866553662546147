"""The light BSRGAN degradation of the official ITER code (``basicsr/data/bsrgan_light_util.py:
degradation_bsrgan_light``, used by its ``BSRGANTrainDataset``).

Differences from the official code, all deliberate:

* The official mod crop swaps height and width (``img[:w - w % sf, :h - h % sf]``), which on non-square images
  crops the wrong axis (and can leave a size that is not a multiple of ``sf``). :func:`~.ops.mod_crop` fixes it.
* Blur kernels of even size are possible there (anisotropic sizes ``randint(2, 11) + 3`` = 5..14); an even kernel
  shifts the image by half a pixel relative to the HQ. This is kept by default (``force_odd_kernels=False``) to
  match the official statistics.
* The camera-ISP op is a no-op there (no ISP model is ever passed), so it is left out; the remaining six ops are
  shuffled uniformly, which is the same distribution of orders.
* ``scipy.interpolate.interp2d`` (removed from SciPy) is replaced by the equivalent bilinear ``map_coordinates``.
* For a tiny sigma and an even size the official ``fspecial`` kernel underflows to zeros (a black image); the
  kernels here are computed in the log domain (:func:`~iter_diffusers.utils.gaussian.gaussian_kernel_2d`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy import ndimage
from scipy.linalg import orth

from ...utils.gaussian import fspecial_gaussian, gaussian_kernel_2d, rotated_covariance
from ...utils.imresize import imresize
from .config import SerializableConfig, check_distribution, check_interpolations, check_prob, check_range
from .ops import choose, choose_weighted, convolve_mirror, jpeg, resize


@dataclass(frozen=True)
class BSRGANLightConfig(SerializableConfig):
    """Parameters of the official light BSRGAN degradation (defaults = ``degradation_bsrgan_light``).

    "Current scale" below is the scale still to be applied: ``scale``, or 2 after the x4 pre-downsample.

    Args:
        pre_downsample_prob (`float`, defaults to 0.25): x4 only: probability of a x1/2 resize first (half cv2,
            half MATLAB bicubic); the rest of the chain then runs at scale 2.
        interpolations (`tuple[str, ...]`, defaults to `("linear", "cubic", "area")`): cv2 interpolations drawn
            uniformly for every resize.
        blur_aniso_prob (`float`, defaults to 0.5): probability that a blur op uses an anisotropic Gaussian (else
            an isotropic one).
        aniso_kernel_size_range (`tuple[int, int]`, defaults to `(5, 14)`): inclusive size range of anisotropic
            kernels (even sizes included, as officially).
        iso_kernel_size_range (`tuple[int, int]`, defaults to `(5, 7)`): inclusive size range of isotropic kernels.
        blur_width_scale (`float`, defaults to 0.25): factor on BSRGAN's blur widths (the "light" model's 1/4):
            anisotropic variances are ``U(0, (4 + s) * scale)`` and the isotropic sigma ``U(0, (2 + 0.2 s) *
            scale)`` for current scale s.
        force_odd_kernels (`bool`, defaults to `False`): round even blur kernel sizes up to odd (off = official).
        downsample2_resize_prob (`float`, defaults to 0.75): probability that "downsample2" is a resize by
            ``1 / U(1, max_factor * s)``; else it is a shifted Gaussian blur plus nearest subsampling by s.
        downsample2_max_factor (`float`, defaults to 2.0): the ``2`` in ``U(1, 2 s)``.
        shifted_blur_kernel_size (`int`, defaults to 25): size of the Gaussian of the nearest-subsampling branch.
        shifted_blur_sigma_min (`float`, defaults to 0.1), shifted_blur_sigma_max_per_scale (`float`, defaults
            to 0.6): its sigma is ``U(min, max_per_scale * s)``.
        noise_level_range (`tuple[int, int]`, defaults to `(2, 8)`): inclusive integer range of the Gaussian noise
            level, in 8-bit units.
        noise_type_probs (`tuple[float, float, float]`, defaults to `(0.4, 0.4, 0.2)`): probabilities of
            (colour, grey, channel-correlated) Gaussian noise. As in the official code the correlated noise
            always uses the *maximum* level of ``noise_level_range``.
        jpeg_prob (`float`, defaults to 0.9): probability of the JPEG op inside the shuffled chain.
        jpeg_quality_range (`tuple[int, int]`, defaults to `(80, 95)`): inclusive quality range of that JPEG.
        final_jpeg_quality_range (`tuple[int, int]`, defaults to `(80, 95)`): inclusive quality range of the
            final, always applied JPEG.
    """

    pipeline: ClassVar[str] = "bsrgan_light"

    pre_downsample_prob: float = 0.25
    interpolations: tuple[str, ...] = ("linear", "cubic", "area")
    blur_aniso_prob: float = 0.5
    aniso_kernel_size_range: tuple[int, int] = (5, 14)
    iso_kernel_size_range: tuple[int, int] = (5, 7)
    blur_width_scale: float = 0.25
    force_odd_kernels: bool = False
    downsample2_resize_prob: float = 0.75
    downsample2_max_factor: float = 2.0
    shifted_blur_kernel_size: int = 25
    shifted_blur_sigma_min: float = 0.1
    shifted_blur_sigma_max_per_scale: float = 0.6
    noise_level_range: tuple[int, int] = (2, 8)
    noise_type_probs: tuple[float, float, float] = (0.4, 0.4, 0.2)
    jpeg_prob: float = 0.9
    jpeg_quality_range: tuple[int, int] = (80, 95)
    final_jpeg_quality_range: tuple[int, int] = (80, 95)

    def __post_init__(self):
        for name in ("pre_downsample_prob", "blur_aniso_prob", "downsample2_resize_prob", "jpeg_prob"):
            check_prob(name, getattr(self, name))
        for name in ("aniso_kernel_size_range", "iso_kernel_size_range"):
            check_range(name, getattr(self, name), low=1)
        for name in ("noise_level_range", "jpeg_quality_range", "final_jpeg_quality_range"):
            check_range(name, getattr(self, name), low=0)
        check_distribution("noise_type_probs", self.noise_type_probs, 3)
        check_interpolations(self.interpolations)
        if self.downsample2_max_factor < 0.5 or self.blur_width_scale <= 0:
            raise ValueError("downsample2_max_factor must be >= 0.5 and blur_width_scale > 0")


def _shift_kernel(kernel: np.ndarray, scale: int) -> np.ndarray:
    """BSRGAN's ``shift_pixel`` on a kernel: bilinear resampling at ``(x + (s-1)/2, y + (s-1)/2)``, clamped."""
    h, w = kernel.shape
    shift = (scale - 1) * 0.5
    ys = np.clip(np.arange(h) + shift, 0, h - 1)
    xs = np.clip(np.arange(w) + shift, 0, w - 1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return ndimage.map_coordinates(kernel, [yy, xx], order=1, mode="nearest")


def _kernel_size(size_range: tuple[int, int], cfg: BSRGANLightConfig, rng: np.random.Generator) -> int:
    size = int(rng.integers(size_range[0], size_range[1], endpoint=True))
    return size + int(cfg.force_odd_kernels and size % 2 == 0)


def _blur(img: np.ndarray, scale: int, cfg: BSRGANLightConfig, rng: np.random.Generator) -> np.ndarray:
    aniso_width = (4.0 + scale) * cfg.blur_width_scale
    iso_width = (2.0 + 0.2 * scale) * cfg.blur_width_scale
    if rng.random() < cfg.blur_aniso_prob:
        var1, var2 = aniso_width * rng.random(), aniso_width * rng.random()
        size = _kernel_size(cfg.aniso_kernel_size_range, cfg, rng)
        cov = rotated_covariance(max(var1, 1e-6), max(var2, 1e-6), rng.random() * math.pi)
        kernel = gaussian_kernel_2d(size, cov)
    else:
        size = _kernel_size(cfg.iso_kernel_size_range, cfg, rng)
        kernel = fspecial_gaussian(size, iso_width * rng.random())
    return convolve_mirror(img, kernel)


def _downsample2(img: np.ndarray, scale: int, cfg: BSRGANLightConfig, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    if rng.random() < cfg.downsample2_resize_prob:
        factor = rng.uniform(1.0, cfg.downsample2_max_factor * scale)
        img = resize(img, (int(h / factor), int(w / factor)), choose(rng, cfg.interpolations))
    else:
        sigma = rng.uniform(cfg.shifted_blur_sigma_min, cfg.shifted_blur_sigma_max_per_scale * scale)
        kernel = _shift_kernel(fspecial_gaussian(cfg.shifted_blur_kernel_size, sigma), scale)
        img = convolve_mirror(img, kernel / kernel.sum())[::scale, ::scale]
    return np.clip(img, 0.0, 1.0)


def _gaussian_noise(img: np.ndarray, cfg: BSRGANLightConfig, rng: np.random.Generator) -> np.ndarray:
    level = int(rng.integers(cfg.noise_level_range[0], cfg.noise_level_range[1], endpoint=True)) / 255.0
    kind = choose_weighted(rng, ("color", "gray", "correlated"), cfg.noise_type_probs)
    h, w = img.shape[:2]
    if kind == "color":
        noise = rng.normal(0.0, level, img.shape)
    elif kind == "gray":
        noise = rng.normal(0.0, level, (h, w, 1))
    else:  # channel-correlated; official quirk: the maximum level, not the drawn one
        max_level = cfg.noise_level_range[1] / 255.0
        basis = orth(rng.random((3, 3)))
        cov = np.abs(max_level**2 * (basis.T @ np.diag(rng.random(3)) @ basis))
        noise = rng.multivariate_normal(np.zeros(3), cov, (h, w), check_valid="ignore")
    return np.clip(img + noise.astype(np.float32), 0.0, 1.0)


def _pre_downsample(img: np.ndarray, cfg: BSRGANLightConfig, rng: np.random.Generator) -> np.ndarray:
    """The x4 model's optional first x1/2: cv2 or MATLAB bicubic with equal chance."""
    if rng.random() < 0.5:
        img = resize(img, (img.shape[0] // 2, img.shape[1] // 2), choose(rng, cfg.interpolations))
    else:
        img = imresize(img, 0.5).astype(np.float32)
    return np.clip(img, 0.0, 1.0)


def _shuffled_ops(rng: np.random.Generator) -> list[str]:
    """The six ops in random order, except that downsample3 (resize to the target) comes after downsample2."""
    ops = ["blur", "blur", "downsample2", "downsample3", "noise", "jpeg"]
    order = [ops[i] for i in rng.permutation(len(ops))]
    i2, i3 = order.index("downsample2"), order.index("downsample3")
    if i2 > i3:
        order[i2], order[i3] = order[i3], order[i2]
    return order


def degrade_bsrgan_light(
    hq: np.ndarray, scale: int, config: BSRGANLightConfig, rng: np.random.Generator
) -> np.ndarray:
    """Light BSRGAN degradation of an already mod-cropped HQ image; returns the LQ image (``hq size / scale``)."""
    img, cur_scale = hq, scale
    if scale == 4 and rng.random() < config.pre_downsample_prob:
        img, cur_scale = _pre_downsample(img, config, rng), 2

    target_hw = None
    for op in _shuffled_ops(rng):
        if op == "blur":
            img = _blur(img, cur_scale, config, rng)
        elif op == "downsample2":
            target_hw = (img.shape[0] // cur_scale, img.shape[1] // cur_scale)
            img = _downsample2(img, cur_scale, config, rng)
        elif op == "downsample3":
            img = np.clip(resize(img, target_hw, choose(rng, config.interpolations)), 0.0, 1.0)
        elif op == "noise":
            img = _gaussian_noise(img, config, rng)
        elif op == "jpeg" and rng.random() < config.jpeg_prob:
            img = jpeg(img, rng.integers(config.jpeg_quality_range[0], config.jpeg_quality_range[1], endpoint=True))
    q_lo, q_hi = config.final_jpeg_quality_range
    return jpeg(img, rng.integers(q_lo, q_hi, endpoint=True))
