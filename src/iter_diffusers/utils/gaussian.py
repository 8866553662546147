"""Gaussian kernels: a separable 1-D window and a 2-D kernel of any covariance, on one centred grid.

The 1-D window serves SSIM (11 taps, sigma 1.5), NIQE (7 taps, sigma 7/6) and the SSIM loss; the 2-D kernel
serves the blurs of both degradation models, MATLAB's ``fspecial('gaussian')`` being its isotropic case.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "kernel_grid",
    "squared_mahalanobis",
    "rotated_covariance",
    "gaussian_kernel_1d",
    "gaussian_kernel_2d",
    "fspecial_gaussian",
]


def kernel_grid(size: int) -> np.ndarray:
    """``(size, size, 2)`` offsets ``[x, y]`` from the kernel's centre (between pixels for even sizes)."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    xx, yy = np.meshgrid(coords, coords)  # kernel[y, x] = f([x, y])
    return np.stack([xx, yy], axis=-1)


def squared_mahalanobis(size: int, cov: np.ndarray) -> np.ndarray:
    """``g^T cov^-1 g`` for every offset ``g`` of :func:`kernel_grid`."""
    grid = kernel_grid(size)
    return np.einsum("...i,ij,...j->...", grid, np.linalg.inv(cov), grid)


def rotated_covariance(var_major: float, var_minor: float, theta: float) -> np.ndarray:
    """``R(theta) diag(var_major, var_minor) R(theta)^T``: variances along ``theta`` and its normal."""
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return rot @ np.diag([var_major, var_minor]) @ rot.T


def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of ``size`` taps (the outer product with itself is MATLAB's ``fspecial``)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return k / k.sum()


def gaussian_kernel_2d(size: int, cov: np.ndarray) -> np.ndarray:
    """Normalised ``exp(-g^T cov^-1 g / 2)`` on the ``size x size`` grid.

    Computed in the log domain, shifted by its maximum: for a tiny width and an even size the plain exponential
    underflows to all zeros (a black image); this one tends to the 2x2 box it should converge to.
    """
    log_kernel = -0.5 * squared_mahalanobis(size, cov)
    kernel = np.exp(log_kernel - log_kernel.max())
    return kernel / kernel.sum()


def fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``, including its cut of values below ``eps * max``."""
    var = max(sigma, 1e-6) ** 2
    kernel = gaussian_kernel_2d(size, np.diag([var, var]))
    kernel[kernel < np.finfo(np.float64).eps * kernel.max()] = 0
    return kernel / kernel.sum()
