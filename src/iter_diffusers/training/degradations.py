"""On-the-fly synthesis of low-quality (LQ) training inputs from high-quality (HQ) images.

Two blind-SR degradation models are provided, both working per image on numpy arrays (HWC, float32, RGB, values in
[0, 1]) with OpenCV/SciPy, and both drawing every random number from a caller-supplied ``numpy.random.Generator``, so
a sample is reproducible from its seed and data-loader workers never share a global RNG:

* :class:`BSRGANLightConfig`: the light BSRGAN model of the official ITER code
  (``basicsr/data/bsrgan_light_util.py: degradation_bsrgan_light``, used by its ``BSRGANTrainDataset``).
* :class:`RealESRGANConfig`: Real-ESRGAN's second-order model (Wang et al., 2021) with its published x4plus
  defaults. Real-ESRGAN runs the second half on the GPU in torch; here everything is per image in numpy/cv2
  (cv2 resize / real JPEG instead of ``F.interpolate`` / DiffJPEG), which matches the distribution, not the bits.

Entry point: :func:`degrade` ``(hq, scale, config, rng) -> (lq, hq_cropped)``. The HQ image is first cropped to a
multiple of ``scale`` and the LQ output is always exactly ``hq_cropped.shape[:2] // scale``, quantised to 8 bits.

Differences from the official light-BSRGAN code (all deliberate, see ``docs/official-iter.md`` §6-§7):

* The official mod crop swaps height and width (``img[:w - w % sf, :h - h % sf]``), which on non-square images
  crops the wrong axis (and can leave a size that is not a multiple of ``sf``). It is fixed here.
* Blur kernels of even size are possible in the official code (anisotropic sizes ``randint(2, 11) + 3`` = 5..14); an
  even kernel shifts the image by half a pixel relative to the HQ. This is kept by default
  (``force_odd_kernels=False``) to match the official statistics.
* The camera-ISP op is a no-op there (no ISP model is ever passed), so it is left out; the remaining six ops are
  shuffled uniformly, which is the same distribution of orders.
* ``scipy.interpolate.interp2d`` (removed from SciPy) is replaced by the equivalent bilinear ``map_coordinates``.

Also here: :func:`paired_random_crop`, :func:`augment` (basicsr's flips/transpose) and
:func:`paired_random_resize` (the official ``use_resize_crop`` option of ``PairedImageDataset``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import cv2
import numpy as np
from scipy import ndimage, special
from scipy.linalg import orth

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

_CV2_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}
_BLUR_KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)


# ----------------------------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------------------------


class _SerializableConfig:
    """Mixin giving frozen dataclass configs a JSON-friendly ``to_dict`` / ``from_dict`` round trip."""

    pipeline: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples become lists) with a ``"pipeline"`` key naming the degradation model."""
        out: dict[str, Any] = {"pipeline": self.pipeline}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` (typos in JSON configs fail loudly)."""
        data = dict(data)
        pipeline = data.pop("pipeline", cls.pipeline)
        if pipeline != cls.pipeline:
            raise ValueError(f"{cls.__name__} cannot be built from a '{pipeline}' config")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} keys: {unknown}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


def _check_range(name: str, value: Sequence[float], low: float | None = None) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be an ordered (min, max) pair, got {value}")
    if low is not None and value[0] < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability, got {value}")


def _check_distribution(name: str, value: Sequence[float], length: int) -> None:
    if len(value) != length or any(p < 0 for p in value) or sum(value) <= 0:
        raise ValueError(f"{name} must hold {length} non-negative weights, got {value}")


@dataclass(frozen=True)
class BSRGANLightConfig(_SerializableConfig):
    """Parameters of the official light BSRGAN degradation (defaults = ``degradation_bsrgan_light``).

    "Current scale" below is the scale still to be applied: ``scale``, or 2 after the x4 pre-downsample.

    Attributes:
        pre_downsample_prob: x4 only: probability of a x1/2 resize first (half cv2, half MATLAB bicubic); the rest
            of the chain then runs at scale 2.
        interpolations: cv2 interpolations drawn uniformly for every resize (``linear``, ``cubic``, ``area``).
        blur_aniso_prob: probability that a blur op uses an anisotropic Gaussian (else an isotropic one).
        aniso_kernel_size_range: inclusive size range of anisotropic kernels (official 5..14, even sizes included).
        iso_kernel_size_range: inclusive size range of isotropic kernels (official 5..7).
        blur_width_scale: factor on BSRGAN's blur widths (the "light" model uses 1/4): anisotropic variances are
            ``U(0, (4 + s) * scale)`` and the isotropic sigma ``U(0, (2 + 0.2 s) * scale)`` for current scale s.
        force_odd_kernels: round even blur kernel sizes up to odd (off = official behaviour).
        downsample2_resize_prob: probability that "downsample2" is a resize by ``1 / U(1, max_factor * s)``; else
            it is a shifted Gaussian blur plus nearest subsampling by s.
        downsample2_max_factor: the ``2`` in ``U(1, 2 s)``.
        shifted_blur_kernel_size: size of the Gaussian of the nearest-subsampling branch (25).
        shifted_blur_sigma_min, shifted_blur_sigma_max_per_scale: its sigma is ``U(min, max_per_scale * s)``.
        noise_level_range: inclusive integer range of the Gaussian noise level, in 8-bit units.
        noise_type_probs: probabilities of (colour, grey, channel-correlated) Gaussian noise. As in the official
            code the correlated noise always uses the *maximum* level of ``noise_level_range``.
        jpeg_prob: probability of the JPEG op inside the shuffled chain.
        jpeg_quality_range: inclusive quality range of that JPEG.
        final_jpeg_quality_range: inclusive quality range of the final, always applied JPEG.
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
            _check_prob(name, getattr(self, name))
        for name in ("aniso_kernel_size_range", "iso_kernel_size_range"):
            _check_range(name, getattr(self, name), low=1)
        _check_range("noise_level_range", self.noise_level_range, low=0)
        _check_range("jpeg_quality_range", self.jpeg_quality_range, low=0)
        _check_range("final_jpeg_quality_range", self.final_jpeg_quality_range, low=0)
        _check_distribution("noise_type_probs", self.noise_type_probs, 3)
        if not self.interpolations or any(m not in _CV2_INTERPOLATION for m in self.interpolations):
            raise ValueError(f"interpolations must be a non-empty subset of {sorted(_CV2_INTERPOLATION)}")
        if self.downsample2_max_factor < 0.5 or self.blur_width_scale <= 0:
            raise ValueError("downsample2_max_factor must be >= 0.5 and blur_width_scale > 0")


@dataclass(frozen=True)
class RealESRGANConfig(_SerializableConfig):
    """Parameters of Real-ESRGAN's second-order degradation (defaults = ``train_realesrgan_x4plus.yml``).

    Fields ending in ``2`` configure the second degradation order. Blur kernels: sizes drawn from
    ``kernel_sizes`` (odd), type from ``kernel_list`` with ``kernel_prob``, sigmas ``U(blur_sigma)`` for both axes,
    rotation ``U(-pi, pi)``, shape ``beta`` from ``betag_range`` (generalised) or ``betap_range`` (plateau); with
    ``sinc_prob`` a circular low-pass (sinc) kernel replaces the blur. Resizes pick up/down/keep with
    ``resize_prob`` and a factor in ``resize_range``; noise is Gaussian (sigma in 8-bit units from ``noise_range``)
    with ``gaussian_noise_prob``, otherwise Poisson scaled by ``poisson_scale_range``, grey with
    ``gray_noise_prob``; JPEG quality is ``U(jpeg_range)`` rounded.

    The final stage resizes to the target size and applies a sinc filter (with ``final_sinc_prob``), with a JPEG
    before or after (50/50). ``usm_sharpen`` degrades the unsharp-masked HQ, as Real-ESRGAN does (the returned HQ
    target is never sharpened).
    """

    pipeline: ClassVar[str] = "realesrgan"

    usm_sharpen: bool = True
    usm_weight: float = 0.5
    usm_radius: int = 50
    usm_threshold: float = 10.0
    interpolations: tuple[str, ...] = ("area", "linear", "cubic")
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)

    kernel_list: tuple[str, ...] = _BLUR_KERNEL_TYPES
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

    second_blur_prob: float = 0.8
    kernel_list2: tuple[str, ...] = _BLUR_KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)

    final_sinc_prob: float = 0.8

    def __post_init__(self):
        for name in ("sinc_prob", "gaussian_noise_prob", "gray_noise_prob", "second_blur_prob", "sinc_prob2",
                     "gaussian_noise_prob2", "gray_noise_prob2", "final_sinc_prob"):
            _check_prob(name, getattr(self, name))
        for suffix in ("", "2"):
            kinds, probs = getattr(self, "kernel_list" + suffix), getattr(self, "kernel_prob" + suffix)
            if any(k not in _BLUR_KERNEL_TYPES for k in kinds):
                raise ValueError(f"kernel_list{suffix} entries must be in {_BLUR_KERNEL_TYPES}")
            _check_distribution("kernel_prob" + suffix, probs, len(kinds))
            _check_distribution("resize_prob" + suffix, getattr(self, "resize_prob" + suffix), 3)
            for name in ("blur_sigma", "resize_range", "noise_range", "poisson_scale_range", "jpeg_range"):
                _check_range(name + suffix, getattr(self, name + suffix), low=0)
            _check_range("betag_range" + suffix, getattr(self, "betag_range" + suffix), low=0)
            _check_range("betap_range" + suffix, getattr(self, "betap_range" + suffix), low=0)
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd positive integers, got {self.kernel_sizes}")
        if not self.interpolations or any(m not in _CV2_INTERPOLATION for m in self.interpolations):
            raise ValueError(f"interpolations must be a non-empty subset of {sorted(_CV2_INTERPOLATION)}")
        if self.blur_sigma[0] <= 0 or self.blur_sigma2[0] <= 0 or self.resize_range[0] <= 0:
            raise ValueError("blur sigmas and resize factors must be positive")


DegradationConfig = BSRGANLightConfig | RealESRGANConfig
_CONFIG_CLASSES = {cls.pipeline: cls for cls in (BSRGANLightConfig, RealESRGANConfig)}


def degradation_config_from_dict(data: Mapping[str, Any]) -> DegradationConfig:
    """Rebuild a config from :meth:`to_dict` output, dispatching on its ``"pipeline"`` key."""
    pipeline = data.get("pipeline")
    if pipeline not in _CONFIG_CLASSES:
        raise ValueError(f"'pipeline' must be one of {sorted(_CONFIG_CLASSES)}, got {pipeline!r}")
    return _CONFIG_CLASSES[pipeline].from_dict(data)


# ----------------------------------------------------------------------------------------------------------------
# Elementary operations
# ----------------------------------------------------------------------------------------------------------------


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right so that height and width are multiples of ``scale`` (the corrected official crop)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _resize(img: np.ndarray, size_hw: tuple[int, int], interpolation: str) -> np.ndarray:
    """cv2 resize to ``(height, width)`` (at least one pixel), keeping the channel axis."""
    h, w = max(1, int(size_hw[0])), max(1, int(size_hw[1]))
    out = cv2.resize(img, (w, h), interpolation=_CV2_INTERPOLATION[interpolation])
    return out[..., None] if out.ndim == 2 and img.ndim == 3 else out


def _choose(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _convolve_mirror(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.convolve(img, kernel[..., None], mode='mirror')`` per channel, via the much faster cv2.

    True convolution (flipped kernel) with reflect-101 borders; the anchor ``(k - 1) // 2`` reproduces SciPy's
    origin for even kernel sizes too, so the official half-pixel shift of even kernels is preserved.
    """
    kh, kw = kernel.shape
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    out = cv2.filter2D(img, -1, flipped, anchor=((kw - 1) // 2, (kh - 1) // 2), borderType=cv2.BORDER_REFLECT_101)
    return out[..., None] if out.ndim == 2 and img.ndim == 3 else out


def _correlate_reflect(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """basicsr's ``filter2D``: correlation with an odd kernel and reflect(-101) padding."""
    out = cv2.filter2D(img, -1, np.asarray(kernel, dtype=np.float32), borderType=cv2.BORDER_REFLECT_101)
    return out[..., None] if out.ndim == 2 and img.ndim == 3 else out


def _jpeg(img: np.ndarray, quality: float) -> np.ndarray:
    """Real JPEG round trip of an RGB float image at an integer quality (cv2/libjpeg, 4:2:0), back to float32."""
    u8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(round(quality))])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return decoded.astype(np.float32) / 255.0


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``imresize`` bicubic)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def _matlab_resize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """Dense (out_len, in_len) matrix of MATLAB's antialiased bicubic resampling with symmetric borders."""
    kernel_width = 4.0 / scale if scale < 1 else 4.0
    x = np.arange(1, out_len + 1, dtype=np.float64)
    centre = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output pixel
    left = np.floor(centre - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    dist = centre[:, None] - idx
    weights = scale * _cubic(dist * scale) if scale < 1 else _cubic(dist)
    weights /= weights.sum(axis=1, keepdims=True)
    src = idx.astype(np.int64) - 1  # 0-based; reflect symmetrically (edge pixel repeated)
    src = np.where(src < 0, -src - 1, src)
    src = np.where(src >= in_len, 2 * in_len - src - 1, src)
    src = np.clip(src, 0, in_len - 1)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps), src.ravel()), weights.ravel())
    return matrix


def imresize_matlab(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB-style bicubic ``imresize`` (antialiased when shrinking) of an HWC image; output size ``ceil(s * n)``.

    Same maths as basicsr's ``imresize_np`` (used by the x4 pre-downsample), written as two small matrix products.
    """
    h, w = img.shape[:2]
    rows = _matlab_resize_matrix(h, int(math.ceil(h * scale)), scale)
    cols = _matlab_resize_matrix(w, int(math.ceil(w * scale)), scale)
    out = np.einsum("oh,hw...->ow...", rows, img.astype(np.float64))
    out = np.einsum("pw,ow...->op...", cols, out)
    return out.astype(np.float32)


# --- light BSRGAN ops ---------------------------------------------------------------------------------------------


def _gaussian_from_log(log_kernel: np.ndarray) -> np.ndarray:
    kernel = np.exp(log_kernel - log_kernel.max())  # max-shift: never all-zero, even for tiny widths
    return kernel / kernel.sum()


def _anisotropic_gaussian_kernel(size: int, theta: float, var1: float, var2: float) -> np.ndarray:
    """BSRGAN's ``anisotropic_Gaussian``: variances ``var1``/``var2`` along ``theta``/its normal.

    The grid is centred at ``size / 2 - 0.5``, i.e. between pixels for even sizes (as officially).
    """
    v = np.array([math.cos(theta), math.sin(theta)])
    basis = np.array([[v[0], v[1]], [v[1], -v[0]]])  # a reflection, its own inverse
    cov = basis @ np.diag([max(var1, 1e-6), max(var2, 1e-6)]) @ basis
    coords = np.arange(size, dtype=np.float64) - (size / 2.0 - 0.5)
    xx, yy = np.meshgrid(coords, coords)  # kernel[y, x] = pdf([x, y])
    grid = np.stack([xx, yy], axis=-1)
    quad = np.einsum("...i,ij,...j->...", grid, np.linalg.inv(cov), grid)
    return _gaussian_from_log(-0.5 * quad)


def _isotropic_gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``, including its cut of values below eps * max.

    Computed in the log domain: for a tiny sigma and an even size the official kernel underflows to all zeros
    (a black image); here it tends to the 2x2 box it should converge to.
    """
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    xx, yy = np.meshgrid(coords, coords)
    log_kernel = -(xx**2 + yy**2) / (2.0 * max(sigma, 1e-6) ** 2)
    kernel = np.exp(log_kernel - log_kernel.max())
    kernel[kernel < np.finfo(np.float64).eps] = 0
    return kernel / kernel.sum()


def _shift_kernel(kernel: np.ndarray, scale: int) -> np.ndarray:
    """BSRGAN's ``shift_pixel`` on a kernel: bilinear resampling at ``(x + (s-1)/2, y + (s-1)/2)``, clamped."""
    h, w = kernel.shape
    shift = (scale - 1) * 0.5
    ys = np.clip(np.arange(h) + shift, 0, h - 1)
    xs = np.clip(np.arange(w) + shift, 0, w - 1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return ndimage.map_coordinates(kernel, [yy, xx], order=1, mode="nearest")


def _bsrgan_blur(img: np.ndarray, scale: int, cfg: BSRGANLightConfig, rng: np.random.Generator) -> np.ndarray:
    aniso_width = (4.0 + scale) * cfg.blur_width_scale
    iso_width = (2.0 + 0.2 * scale) * cfg.blur_width_scale
    if rng.random() < cfg.blur_aniso_prob:
        var1, var2 = aniso_width * rng.random(), aniso_width * rng.random()
        size = int(rng.integers(cfg.aniso_kernel_size_range[0], cfg.aniso_kernel_size_range[1], endpoint=True))
        size += int(cfg.force_odd_kernels and size % 2 == 0)
        kernel = _anisotropic_gaussian_kernel(size, rng.random() * math.pi, var1, var2)
    else:
        size = int(rng.integers(cfg.iso_kernel_size_range[0], cfg.iso_kernel_size_range[1], endpoint=True))
        size += int(cfg.force_odd_kernels and size % 2 == 0)
        kernel = _isotropic_gaussian_kernel(size, iso_width * rng.random())
    return _convolve_mirror(img, kernel)


def _bsrgan_downsample2(img: np.ndarray, scale: int, cfg: BSRGANLightConfig, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    if rng.random() < cfg.downsample2_resize_prob:
        factor = rng.uniform(1.0, cfg.downsample2_max_factor * scale)
        img = _resize(img, (int(h / factor), int(w / factor)), _choose(rng, cfg.interpolations))
    else:
        sigma = rng.uniform(cfg.shifted_blur_sigma_min, cfg.shifted_blur_sigma_max_per_scale * scale)
        kernel = _shift_kernel(_isotropic_gaussian_kernel(cfg.shifted_blur_kernel_size, sigma), scale)
        img = _convolve_mirror(img, kernel / kernel.sum())[::scale, ::scale]
    return np.clip(img, 0.0, 1.0)


def _bsrgan_gaussian_noise(img: np.ndarray, cfg: BSRGANLightConfig, rng: np.random.Generator) -> np.ndarray:
    level = int(rng.integers(cfg.noise_level_range[0], cfg.noise_level_range[1], endpoint=True)) / 255.0
    kind = _choose_weighted(rng, ("color", "gray", "correlated"), cfg.noise_type_probs)
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


def _choose_weighted(rng: np.random.Generator, options: Sequence[Any], weights: Sequence[float]) -> Any:
    p = np.asarray(weights, dtype=np.float64)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def degrade_bsrgan_light(
    hq: np.ndarray, scale: int, config: BSRGANLightConfig, rng: np.random.Generator
) -> np.ndarray:
    """Light BSRGAN degradation of an already mod-cropped HQ image; returns the LQ image (``hq size / scale``)."""
    h, w = hq.shape[:2]
    img = hq
    cur_scale = scale
    if scale == 4 and rng.random() < config.pre_downsample_prob:
        if rng.random() < 0.5:
            img = _resize(img, (h // 2, w // 2), _choose(rng, config.interpolations))
        else:
            img = imresize_matlab(img, 0.5)
        img = np.clip(img, 0.0, 1.0)
        cur_scale = 2

    ops = ["blur", "blur", "downsample2", "downsample3", "noise", "jpeg"]
    order = [ops[i] for i in rng.permutation(len(ops))]
    i2, i3 = order.index("downsample2"), order.index("downsample3")
    if i2 > i3:  # downsample3 must come after downsample2
        order[i2], order[i3] = order[i3], order[i2]

    target_hw = None
    for op in order:
        if op == "blur":
            img = _bsrgan_blur(img, cur_scale, config, rng)
        elif op == "downsample2":
            target_hw = (img.shape[0] // cur_scale, img.shape[1] // cur_scale)
            img = _bsrgan_downsample2(img, cur_scale, config, rng)
        elif op == "downsample3":
            img = np.clip(_resize(img, target_hw, _choose(rng, config.interpolations)), 0.0, 1.0)
        elif op == "noise":
            img = _bsrgan_gaussian_noise(img, config, rng)
        elif op == "jpeg" and rng.random() < config.jpeg_prob:
            img = _jpeg(img, rng.integers(config.jpeg_quality_range[0], config.jpeg_quality_range[1], endpoint=True))
    q_lo, q_hi = config.final_jpeg_quality_range
    return _jpeg(img, rng.integers(q_lo, q_hi, endpoint=True))


# --- Real-ESRGAN ops ----------------------------------------------------------------------------------------------


def _kernel_grid(size: int) -> np.ndarray:
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    xx, yy = np.meshgrid(coords, coords)
    return np.stack([xx, yy], axis=-1)


def _mahalanobis_sq(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """``g^T Sigma^-1 g`` on the kernel grid, ``Sigma = R(theta) diag(sx^2, sy^2) R(theta)^T``."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    grid = _kernel_grid(size)
    return np.einsum("...i,ij,...j->...", grid, np.linalg.inv(cov), grid)


def _sinc_kernel(cutoff: float, size: int) -> np.ndarray:
    """Circularly symmetric 2-D low-pass (sinc / Airy) kernel with cutoff in radians (pi is Nyquist)."""
    r = np.linalg.norm(_kernel_grid(size), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    kernel[size // 2, size // 2] = cutoff**2 / (4 * np.pi)
    return kernel / kernel.sum()


def _random_blur_kernel(
    rng: np.random.Generator,
    kinds: Sequence[str],
    probs: Sequence[float],
    sigma_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
    sinc_prob: float,
    sizes: Sequence[int],
) -> np.ndarray:
    """Real-ESRGAN's first/second-order kernel: a sinc with ``sinc_prob``, else a random mixed blur kernel."""
    size = int(_choose(rng, sizes))
    if rng.random() < sinc_prob:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return _sinc_kernel(rng.uniform(low, math.pi), size)
    kind = _choose_weighted(rng, kinds, probs)
    sigma_x = rng.uniform(*sigma_range)
    if kind.endswith("aniso"):
        sigma_y, theta = rng.uniform(*sigma_range), rng.uniform(-math.pi, math.pi)
    else:
        sigma_y, theta = sigma_x, 0.0
    quad = _mahalanobis_sq(size, sigma_x, sigma_y, theta)
    if kind in ("iso", "aniso"):
        kernel = np.exp(-0.5 * quad)
    else:
        beta_range = betag_range if kind.startswith("generalized") else betap_range
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
    direction = _choose_weighted(rng, ("up", "down", "keep"), probs)
    if direction == "up":
        return rng.uniform(1.0, factor_range[1])
    if direction == "down":
        return rng.uniform(factor_range[0], 1.0)
    return 1.0


def _random_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    gaussian_prob: float,
    sigma_range: Sequence[float],
    poisson_scale_range: Sequence[float],
    gray_prob: float,
) -> np.ndarray:
    """Real-ESRGAN's noise: Gaussian (8-bit sigma) or Poisson (shot) noise, grey with ``gray_prob``; clipped."""
    h, w = img.shape[:2]
    if rng.random() < gaussian_prob:
        sigma = rng.uniform(*sigma_range) / 255.0
        gray = rng.random() < gray_prob
        noise = rng.standard_normal((h, w, 1) if gray else img.shape) * sigma
    else:
        noise_scale = rng.uniform(*poisson_scale_range)
        gray = rng.random() < gray_prob
        source = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None] if gray else img
        source = np.clip(np.rint(source * 255.0), 0, 255) / 255.0
        levels = 2 ** math.ceil(math.log2(max(len(np.unique(source)), 1)))  # counts per unit intensity
        noise = (rng.poisson(source * levels) / levels - source) * noise_scale
    return np.clip(img + noise.astype(np.float32), 0.0, 1.0)


def degrade_realesrgan(hq: np.ndarray, scale: int, config: RealESRGANConfig, rng: np.random.Generator) -> np.ndarray:
    """Real-ESRGAN second-order degradation of a mod-cropped HQ image; returns the LQ image (``hq size / scale``)."""
    cfg = config
    h, w = hq.shape[:2]
    img = _usm_sharpen(hq, cfg.usm_weight, cfg.usm_radius, cfg.usm_threshold) if cfg.usm_sharpen else hq

    # first order: blur, resize, noise, JPEG
    kernel = _random_blur_kernel(rng, cfg.kernel_list, cfg.kernel_prob, cfg.blur_sigma, cfg.betag_range,
                                 cfg.betap_range, cfg.sinc_prob, cfg.kernel_sizes)
    img = _correlate_reflect(img, kernel)
    factor = _random_resize_factor(rng, cfg.resize_prob, cfg.resize_range)
    img = _resize(img, (int(h * factor), int(w * factor)), _choose(rng, cfg.interpolations))
    img = _random_noise(img, rng, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range,
                        cfg.gray_noise_prob)
    img = _jpeg(img, rng.uniform(*cfg.jpeg_range))

    # second order: optional blur, resize around the target size, noise
    if rng.random() < cfg.second_blur_prob:
        kernel = _random_blur_kernel(rng, cfg.kernel_list2, cfg.kernel_prob2, cfg.blur_sigma2, cfg.betag_range2,
                                     cfg.betap_range2, cfg.sinc_prob2, cfg.kernel_sizes)
        img = _correlate_reflect(img, kernel)
    factor = _random_resize_factor(rng, cfg.resize_prob2, cfg.resize_range2)
    img = _resize(img, (int(h / scale * factor), int(w / scale * factor)), _choose(rng, cfg.interpolations))
    img = _random_noise(img, rng, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2,
                        cfg.gray_noise_prob2)

    # final: resize to the target + sinc filter, and JPEG, in random order
    sinc = None
    if rng.random() < cfg.final_sinc_prob:
        sinc = _sinc_kernel(rng.uniform(math.pi / 3, math.pi), int(_choose(rng, cfg.kernel_sizes)))
    jpeg_quality = rng.uniform(*cfg.jpeg_range2)
    interpolation = _choose(rng, cfg.interpolations)

    def resize_and_sinc(x: np.ndarray) -> np.ndarray:
        x = _resize(x, (h // scale, w // scale), interpolation)
        return x if sinc is None else _correlate_reflect(x, sinc)

    if rng.random() < 0.5:
        img = _jpeg(np.clip(resize_and_sinc(img), 0.0, 1.0), jpeg_quality)
    else:
        img = resize_and_sinc(_jpeg(img, jpeg_quality))
    return (np.clip(np.rint(img * 255.0), 0, 255) / 255.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def degrade(
    hq: np.ndarray,
    scale: int,
    config: DegradationConfig | Mapping[str, Any] | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthesise the LQ counterpart of an HQ image.

    Args:
        hq: HWC RGB image, float in [0, 1] (uint8 is accepted and rescaled).
        scale: integer SR factor (ITER uses 2 and 4).
        config: a :class:`BSRGANLightConfig` (``None`` = its defaults, the official choice), a
            :class:`RealESRGANConfig`, or a dict from their ``to_dict``.
        rng: the sample's generator, e.g. ``np.random.default_rng([seed, epoch, index])``; nothing else is used.

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
    scale = int(scale)
    if hq.ndim != 3 or hq.shape[2] != 3:
        raise ValueError(f"hq must be an HxWx3 RGB image, got shape {hq.shape}")
    if hq.dtype == np.uint8:
        hq = hq.astype(np.float32) / 255.0
    hq = np.ascontiguousarray(mod_crop(hq, scale), dtype=np.float32)
    if hq.shape[0] < scale or hq.shape[1] < scale:
        raise ValueError(f"hq ({hq.shape[0]}x{hq.shape[1]}) is smaller than the scale {scale}")

    if isinstance(config, BSRGANLightConfig):
        lq = degrade_bsrgan_light(hq, scale, config, rng)
    elif isinstance(config, RealESRGANConfig):
        lq = degrade_realesrgan(hq, scale, config, rng)
    else:
        raise TypeError(f"Unsupported degradation config {type(config).__name__}")
    expected = (hq.shape[0] // scale, hq.shape[1] // scale, 3)
    if lq.shape != expected:  # guaranteed by construction; a cheap guard against future edits
        raise RuntimeError(f"degradation produced {lq.shape}, expected {expected}")
    return np.ascontiguousarray(lq, dtype=np.float32), hq


# ----------------------------------------------------------------------------------------------------------------
# Paired cropping and augmentation
# ----------------------------------------------------------------------------------------------------------------


def paired_random_crop(
    hq: np.ndarray, lq: np.ndarray, hq_size: int, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Crop aligned square patches: ``hq_size`` from HQ and ``hq_size // scale`` from LQ (basicsr's version).

    The LQ corner is drawn uniformly (inclusive bounds) and the HQ corner is ``scale`` times it.
    """
    if hq_size % scale:
        raise ValueError(f"hq_size {hq_size} must be a multiple of scale {scale}")
    lq_size = hq_size // scale
    h_lq, w_lq = lq.shape[:2]
    if hq.shape[0] != h_lq * scale or hq.shape[1] != w_lq * scale:
        raise ValueError(f"HQ {hq.shape[:2]} is not {scale}x LQ {lq.shape[:2]}")
    if h_lq < lq_size or w_lq < lq_size:
        raise ValueError(f"LQ {lq.shape[:2]} is smaller than the patch size {lq_size}")
    top = int(rng.integers(0, h_lq - lq_size, endpoint=True))
    left = int(rng.integers(0, w_lq - lq_size, endpoint=True))
    lq_patch = lq[top : top + lq_size, left : left + lq_size]
    hq_patch = hq[top * scale : top * scale + hq_size, left * scale : left * scale + hq_size]
    return hq_patch, lq_patch


def paired_random_resize(
    hq: np.ndarray, lq: np.ndarray, min_hq_size: int, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The official ``use_resize_crop`` option: rescale an aligned pair by one random factor (cv2 bicubic).

    The new HQ height is drawn from ``[min_hq_size, H]`` and rounded down to a multiple of ``scale``; the width
    follows the same factor (also a multiple of ``scale``), and the LQ gets exactly the HQ size / ``scale``. (The
    official code resizes both by ``fx``/``fy``, which can break the pairing for non-square images.)
    """
    h, w = hq.shape[:2]
    if lq.shape[0] * scale != h or lq.shape[1] * scale != w:
        raise ValueError(f"HQ {hq.shape[:2]} is not {scale}x LQ {lq.shape[:2]}")
    if h < min_hq_size:
        raise ValueError(f"HQ height {h} is below min_hq_size {min_hq_size}")
    new_h = int(rng.integers(min_hq_size, h, endpoint=True))
    new_h = max(scale, new_h - new_h % scale)
    factor = new_h / h
    new_w = max(scale, int(round(w * factor)) // scale * scale)
    hq = _resize(hq, (new_h, new_w), "cubic")
    lq = _resize(lq, (new_h // scale, new_w // scale), "cubic")
    return hq, lq


def augment(
    images: np.ndarray | Sequence[np.ndarray],
    rng: np.random.Generator,
    hflip: bool = True,
    rotation: bool = True,
    return_ops: bool = False,
):
    """basicsr's ``augment``: the same random horizontal flip, vertical flip and transpose (each p = 0.5) on all images.

    ``rotation`` enables the vertical flip and the transpose (together: the 8 dihedral transforms). A single array
    gives an array back, a sequence a list. Outputs are contiguous copies (safe for ``torch.from_numpy``). With
    ``return_ops=True`` the drawn ``(hflip, vflip, transpose)`` flags are returned too.
    """
    do_hflip = hflip and rng.random() < 0.5
    do_vflip = rotation and rng.random() < 0.5
    do_transpose = rotation and rng.random() < 0.5

    def apply(img: np.ndarray) -> np.ndarray:
        if do_hflip:
            img = img[:, ::-1]
        if do_vflip:
            img = img[::-1]
        if do_transpose:
            img = img.swapaxes(0, 1)
        return np.ascontiguousarray(img)

    out = apply(images) if isinstance(images, np.ndarray) else [apply(im) for im in images]
    return (out, (do_hflip, do_vflip, do_transpose)) if return_ops else out
