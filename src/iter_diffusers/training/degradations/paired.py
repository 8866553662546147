"""Aligned random crops, rescales and flips of (HQ, LQ) pairs: basicsr's ``paired_random_crop`` and ``augment``,
and the official ``use_resize_crop`` option of ``PairedImageDataset``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .ops import resize


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
    hq = resize(hq, (new_h, new_w), "cubic")
    lq = resize(lq, (new_h // scale, new_w // scale), "cubic")
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
