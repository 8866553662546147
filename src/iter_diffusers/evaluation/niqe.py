"""NIQE (Mittal, Soundararajan & Bovik, "Making a 'completely blind' image quality analyzer", IEEE SPL 2013).

A NumPy re-implementation that follows the authors' MATLAB release (``niqe_release``) step by step, so that the
numbers are comparable with the values reported in SR papers (lower is better):

1. the image is reduced to one channel: the Y of MATLAB ``rgb2ycbcr`` (see
   :func:`iter_diffusers.evaluation.metrics.rgb2ycbcr_y`), ``crop_border`` pixels are cut from each edge and the
   result is rounded to integers (this is how BasicSR's ``calculate_niqe`` prepares the image);
2. the image is cut down to a whole number of 96x96 blocks (no overlap);
3. at two scales (full size, then MATLAB ``imresize(im, 0.5)``, i.e. antialiased bicubic:
   :func:`iter_diffusers.utils.imresize.imresize`) the MSCN coefficients
   ``(I - mu) / (sigma + 1)`` are computed with a 7x7 Gaussian window (sigma 7/6, ``'replicate'`` borders), and
   for every block 18 features are fitted: a GGD (via the AGGD estimator) of the coefficients and an AGGD of the
   products with the horizontal, vertical and both diagonal neighbours (circular shifts inside the block);
4. the multivariate Gaussian fitted to the 36-D block features is compared with the pristine model shipped by
   the authors (``data/niqe_pris_params.npz``): ``sqrt((mu_p - mu)^T pinv((S_p + S) / 2) (mu_p - mu))``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..utils.gaussian import gaussian_kernel_1d
from ..utils.imresize import imresize
from .metrics import correlate_separable, prepare_for_metric

__all__ = [
    "NIQE_PARAMS_PATH",
    "load_niqe_params",
    "niqe",
    "calculate_niqe",
]

NIQE_PARAMS_PATH = Path(__file__).resolve().parent.parent / "data" / "niqe_pris_params.npz"
BLOCK_SIZE = 96


@lru_cache(maxsize=1)
def load_niqe_params() -> tuple[np.ndarray, np.ndarray]:
    """The pristine multivariate Gaussian of the MATLAB release: ``(mu (36,), cov (36, 36))``."""
    if not NIQE_PARAMS_PATH.is_file():
        raise FileNotFoundError(
            f"NIQE parameter file not found: {NIQE_PARAMS_PATH} (it should be installed with the package)"
        )
    with np.load(NIQE_PARAMS_PATH) as data:
        mu = np.asarray(data["mu_pris_param"], dtype=np.float64).reshape(-1)
        cov = np.asarray(data["cov_pris_param"], dtype=np.float64)
    return mu, cov


# --------------------------------------------------------------------------------------------------------------
# NIQE
# --------------------------------------------------------------------------------------------------------------

_NIQE_WINDOW = gaussian_kernel_1d(7, 7.0 / 6.0)  # outer(w, w) == fspecial('gaussian', 7, 7/6)


@lru_cache(maxsize=1)
def _gamma_grid() -> tuple[np.ndarray, np.ndarray]:
    """The shape grid ``0.2:0.001:10`` and the generalized Gaussian ratio ``r(g)`` on it."""
    gam = 0.2 + 0.001 * np.arange(9801, dtype=np.float64)
    g = np.array([math.gamma(v) for v in (1.0 / gam)])
    g2 = np.array([math.gamma(v) for v in (2.0 / gam)])
    g3 = np.array([math.gamma(v) for v in (3.0 / gam)])
    return gam, (g2 * g2) / (g * g3)


def _estimate_aggd(vec: np.ndarray) -> tuple[float, float, float]:
    """Moment-matching AGGD fit (as ``estimateaggdparam.m``): ``(alpha, beta_left, beta_right)``.

    Returns NaNs where a side of the distribution is empty (flat blocks), like MATLAB.
    """
    gam, r_gam = _gamma_grid()
    neg = vec[vec < 0]
    pos = vec[vec > 0]
    if neg.size == 0 or pos.size == 0:
        return math.nan, math.nan, math.nan
    left_std = math.sqrt(float(np.mean(neg * neg)))
    right_std = math.sqrt(float(np.mean(pos * pos)))
    if right_std == 0.0:
        return math.nan, math.nan, math.nan
    gammahat = left_std / right_std
    mean_sq = float(np.mean(vec * vec))
    rhat = float(np.mean(np.abs(vec))) ** 2 / mean_sq
    rhatnorm = (rhat * (gammahat**3 + 1.0) * (gammahat + 1.0)) / ((gammahat**2 + 1.0) ** 2)
    alpha = float(gam[int(np.argmin((r_gam - rhatnorm) ** 2))])
    ratio = math.sqrt(math.gamma(1.0 / alpha) / math.gamma(3.0 / alpha))
    return alpha, left_std * ratio, right_std * ratio


def _block_features(block: np.ndarray) -> list:
    """The 18 NIQE features of one block of MSCN coefficients (``computefeature.m``)."""
    alpha, bl, br = _estimate_aggd(block.ravel())
    feat = [alpha, (bl + br) / 2.0]
    for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
        pair = (block * np.roll(block, shift, axis=(0, 1))).ravel()
        alpha, bl, br = _estimate_aggd(pair)
        if math.isnan(alpha):
            mean = math.nan
        else:
            mean = (br - bl) * (math.gamma(2.0 / alpha) / math.gamma(1.0 / alpha))
        feat.extend([alpha, mean, bl, br])
    return feat


def _flat_windows(img: np.ndarray, size: int) -> np.ndarray:
    """True where the ``size x size`` window (edge-replicated) around a pixel is constant."""
    lo = size // 2
    padded = np.pad(img, ((lo, size - 1 - lo), (lo, size - 1 - lo)), mode="edge")
    h, w = img.shape
    rmax = padded[:, 0:w].copy()
    rmin = rmax.copy()
    for j in range(1, size):
        np.maximum(rmax, padded[:, j : j + w], out=rmax)
        np.minimum(rmin, padded[:, j : j + w], out=rmin)
    cmax = rmax[0:h].copy()
    cmin = rmin[0:h].copy()
    for i in range(1, size):
        np.maximum(cmax, rmax[i : i + h], out=cmax)
        np.minimum(cmin, rmin[i : i + h], out=cmin)
    return cmax == cmin


def _mscn(img: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients ``(I - mu) / (sigma + 1)``.

    Where the whole window is constant the coefficient is exactly 0 mathematically; the filtered mean then
    differs from the pixel only by rounding noise (~1e-14), whose *sign* would still move such pixels into the
    left or right half of the AGGD fit. Those pixels are therefore set to exactly 0.
    """
    mu = correlate_separable(img, _NIQE_WINDOW, mode="nearest")
    sigma = np.sqrt(np.abs(correlate_separable(img * img, _NIQE_WINDOW, mode="nearest") - mu * mu))
    out = (img - mu) / (sigma + 1.0)
    out[_flat_windows(img, _NIQE_WINDOW.size)] = 0.0
    return out


def niqe(
    img: np.ndarray,
    mu_pris: np.ndarray | None = None,
    cov_pris: np.ndarray | None = None,
    block_size: int = BLOCK_SIZE,
) -> float:
    """NIQE of a single-channel image on the ``[0, 255]`` scale (``computequality.m``).

    Most callers want :func:`calculate_niqe`, which prepares an RGB image first. The image must hold at least two
    ``block_size`` blocks (a covariance needs two samples).
    """
    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"niqe() expects a 2-D (grey / Y) image, got shape {img.shape}")
    if block_size % 2:
        raise ValueError("block_size must be even (the second scale uses block_size / 2)")
    if mu_pris is None or cov_pris is None:
        mu_pris, cov_pris = load_niqe_params()
    h, w = img.shape
    nbh, nbw = h // block_size, w // block_size
    if nbh * nbw < 2:
        raise ValueError(
            f"NIQE needs at least two {block_size}x{block_size} blocks, the (cropped) image is only {h}x{w}"
        )
    img = img[: nbh * block_size, : nbw * block_size]

    per_scale = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for scale in (1, 2):
            mscn = _mscn(img)
            bs = block_size // scale
            feats = [
                _block_features(mscn[bh * bs : (bh + 1) * bs, bw * bs : (bw + 1) * bs])
                for bw in range(nbw)
                for bh in range(nbh)
            ]
            per_scale.append(np.asarray(feats, dtype=np.float64))
            if scale == 1:
                img = imresize(img, scale=0.5)
        feats = np.concatenate(per_scale, axis=1)  # (n_blocks, 36)

        complete = feats[~np.isnan(feats).any(axis=1)]
        if complete.shape[0] < 2 or np.isnan(feats).all(axis=0).any():
            return math.nan  # e.g. a flat image: no block has usable statistics
        mu = np.nanmean(feats, axis=0)
        cov = np.cov(complete, rowvar=False)
    diff = np.asarray(mu_pris, dtype=np.float64).reshape(-1) - mu
    inv = np.linalg.pinv((np.asarray(cov_pris, dtype=np.float64) + cov) / 2.0)
    return float(math.sqrt(max(float(diff @ inv @ diff), 0.0)))


def calculate_niqe(img: np.ndarray, crop_border: int = 0, convert_to: str = "y") -> float:
    """NIQE of an image (lower is better), MATLAB-compatible.

    Args:
        img: ``uint8`` RGB ``H x W x 3`` in ``[0, 255]`` or float RGB in ``[0, 1]``; a grey ``H x W`` image is used
            as it is.
        crop_border: pixels removed from each edge.
        convert_to: ``"y"`` (default; Y of MATLAB ``rgb2ycbcr``, as BasicSR) or ``"gray"`` (``rgb2gray`` weights
            ``0.299 R + 0.587 G + 0.114 B``, MATLAB's own NIQE demo).
    """
    if convert_to not in ("y", "gray"):
        raise ValueError("convert_to must be 'y' or 'gray'")
    arr = np.asarray(img)
    if convert_to == "gray" and arr.ndim == 3 and arr.shape[2] == 3:
        y = prepare_for_metric(arr, crop_border, test_y_channel=False)
        y = y @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])  # MATLAB rgb2gray
    else:
        y = prepare_for_metric(arr, crop_border, test_y_channel=True)[:, :, 0]
    return niqe(np.round(y))
