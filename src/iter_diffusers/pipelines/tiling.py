"""Tiled inference: how many tiles an input needs to stay within a memory budget, and how they blend back.

ITER runs whole (official ``test``) or tile by tile (official ``test_tile``, Real-ESRGAN's scheme): each tile is
restored with ``tile_padding`` LQ pixels of context and its padded result is blended into the output with
weights that ramp linearly across the overlap, so no seam shows (or, without blending, its centre is pasted).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import torch

#: ``tile_size="auto"`` keeps one tile's estimated activation memory under this many bytes (and under a quarter of
#: the free memory of the device). 1 GiB holds a whole 800×600 input of the paper-size model on a GPU, and keeps the
#: bundled model under 2 GB of peak RSS on any input on a CPU.
AUTO_TILE_BUDGET = 1 << 30


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the GPU's own memory for CUDA, the host's available memory otherwise."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX: rely on the budget alone
        return AUTO_TILE_BUDGET * 4


def fewest_equal_tiles(height: int, width: int, tile_padding: int, max_pixels: int,
                       run_size: Callable[[int, int], tuple[int, int]]) -> tuple[int, int] | None:
    """The tile shape (LQ pixels) of the fewest equal tiles of a ``height × width`` input whose runs, padded by
    ``run_size`` (the pipeline's padding of a tile with its context), hold at most ``max_pixels``; among equal
    counts the smallest runs. None when no tile shape fits (the padding alone exceeds the budget)."""

    def run_pixels(tile_h: int, tile_w: int) -> int:
        run_h, run_w = run_size(min(tile_h + 2 * tile_padding, height), min(tile_w + 2 * tile_padding, width))
        return run_h * run_w

    best = None  # (tile count, pixels per run, shape)
    for rows in range(1, height + 1):
        if best is not None and rows > best[0]:
            break
        tile_h = math.ceil(height / rows)
        if run_pixels(tile_h, 1) > max_pixels:
            continue
        low, high = 1, width  # fewest columns that fit: the run size shrinks as columns are added
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if run_pixels(tile_h, math.ceil(width / middle)) <= max_pixels \
                else (middle + 1, high)
        shape = (tile_h, math.ceil(width / low))
        best = min(best or (math.inf,), (rows * low, run_pixels(*shape), shape))
    return None if best is None else best[2]


def num_tiles(image: torch.Tensor, tile_shape: tuple[int, int]) -> int:
    return math.ceil(image.shape[1] / tile_shape[0]) * math.ceil(image.shape[2] / tile_shape[1])


def run_tiled(lq: torch.Tensor, restore: Callable[[torch.Tensor], torch.Tensor], scale: int,
              tile_shape: tuple[int, int], tile_padding: int, blending: bool) -> torch.Tensor:
    """Restore one image (1, 3, H, W) tile by tile with ``restore`` (a tile with its context -> its ×``scale``
    result on the CPU); tiles are visited row by row. Returns (1, 3, sH, sW) on the CPU."""
    _, _, height, width = lq.shape
    tile_h, tile_w = tile_shape
    out = torch.zeros(1, 3, height * scale, width * scale)
    weight = torch.zeros(1, 1, height * scale, width * scale)
    for y0 in range(0, height, tile_h):
        for x0 in range(0, width, tile_w):
            y1, x1 = min(y0 + tile_h, height), min(x0 + tile_w, width)
            py0, px0 = max(y0 - tile_padding, 0), max(x0 - tile_padding, 0)
            py1, px1 = min(y1 + tile_padding, height), min(x1 + tile_padding, width)
            tile = restore(lq[:, :, py0:py1, px0:px1])
            if not blending:
                core = tile[:, :, (y0 - py0) * scale : (y1 - py0) * scale, (x0 - px0) * scale : (x1 - px0) * scale]
                out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = core
                continue
            ramp_y = overlap_ramp(py0, py1, y0, y1, height, tile_padding, scale)
            ramp_x = overlap_ramp(px0, px1, x0, x1, width, tile_padding, scale)
            w = ramp_y[:, None] * ramp_x[None, :]
            out[:, :, py0 * scale : py1 * scale, px0 * scale : px1 * scale] += tile * w
            weight[:, :, py0 * scale : py1 * scale, px0 * scale : px1 * scale] += w
    return out if not blending else out / weight.clamp(min=1e-12)


def overlap_ramp(p0: int, p1: int, c0: int, c1: int, size: int, pad: int, scale: int) -> torch.Tensor:
    """Blend weights along one axis for a tile with core [c0, c1) and padded extent [p0, p1) (LQ pixels).

    Across each interior core boundary b the weight ramps linearly over [b − pad, b + pad), so that the two
    tiles meeting there sum to one; it is 1 elsewhere. Returned at output resolution.
    """
    u = (torch.arange(p0 * scale, p1 * scale, dtype=torch.float32) + 0.5) / scale  # output pixel centres, LQ units
    w = torch.ones_like(u)
    if pad == 0:
        return w
    if c0 > 0:
        w = torch.minimum(w, ((u - (c0 - pad)) / (2 * pad)).clamp(0, 1))
    if c1 < size:
        w = torch.minimum(w, (((c1 + pad) - u) / (2 * pad)).clamp(0, 1))
    return w
