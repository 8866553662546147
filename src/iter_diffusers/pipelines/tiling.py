"""Tiled inference: how many tiles an input needs to stay within a memory budget, and how they blend back.

ITER runs whole (official ``test``) or tile by tile (official ``test_tile``, Real-ESRGAN's scheme): each tile is
restored with ``tile_padding`` LQ pixels of context and its padded result is blended into the output with
weights that ramp linearly across the overlap, so no seam shows (or, without blending, its centre is pasted).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

#: ``tile_size="auto"`` keeps one run's estimated fp32 activation memory under this many bytes, whatever the machine:
#: the plan (and so the picture) follows the input size and the model only. 1 GiB keeps the bundled model under 2 GB
#: of peak RSS on any input on a CPU. Wide models tile early: the paper-size model's runs hold about 100² LQ pixels,
#: so a 128² input runs as 5 tiles, 1.8× the time of one run (docs/benchmarks.md); ``tile_size=None`` avoids that.
AUTO_TILE_BUDGET = 1 << 30

#: The narrowest full-resolution width the estimate of a run's memory counts (see
#: ``ITERPipeline.activation_bytes_per_pixel``): below it, the parts that do not narrow dominate.
MIN_ESTIMATED_WIDTH = 32


def available_memory(device: torch.device) -> int | None:
    """Bytes a run can still take on ``device``: CUDA's free memory (with torch's unused reserve); on the host, /proc/meminfo's MemAvailable
    capped by the process's cgroup limit (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``, minus its usage).
    None where neither can be read. Used to warn before a run, never to choose its tiles."""
    if device.type == "cuda":  # free, plus what torch's allocator holds reserved but unused
        return torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(
            device)
    if device.type != "cpu":
        return None
    values = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    return min(values) if values else None


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) and unreadable values count as unknown


def _meminfo_available() -> int | None:
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _cgroup_headroom() -> int | None:
    for limit_file, usage_file in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes",
                                                                       "memory/memory.usage_in_bytes")):
        limit = _read_int(f"/sys/fs/cgroup/{limit_file}")
        if limit is not None and limit < 1 << 60:  # v1 reports "no limit" as a huge number
            return max(limit - (_read_int(f"/sys/fs/cgroup/{usage_file}") or 0), 0)
    return None


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


class TileSettings(NamedTuple):
    """How a call tiles: LQ pixels of context, blending (else centres are pasted), tiles per run."""

    padding: int
    blending: bool
    batch_size: int


@dataclass(frozen=True)
class Tile:
    """One tile of an input, in LQ pixels: its core ``[y0, y1) × [x0, x1)`` and its extent with context."""

    y0: int
    y1: int
    x0: int
    x1: int
    py0: int
    py1: int
    px0: int
    px1: int

    @property
    def run_shape(self) -> tuple[int, int]:
        return self.py1 - self.py0, self.px1 - self.px0


def tiles_of(height: int, width: int, tile_shape: tuple[int, int], tile_padding: int) -> list[Tile]:
    """The tiles of a ``height × width`` input, row by row (the official order)."""
    tile_h, tile_w = tile_shape
    tiles = []
    for y0 in range(0, height, tile_h):
        for x0 in range(0, width, tile_w):
            y1, x1 = min(y0 + tile_h, height), min(x0 + tile_w, width)
            tiles.append(Tile(y0, y1, x0, x1, max(y0 - tile_padding, 0), min(y1 + tile_padding, height),
                              max(x0 - tile_padding, 0), min(x1 + tile_padding, width)))
    return tiles


def tile_batches(tiles: list[Tile], batch_size: int) -> list[list[int]]:
    """Indices of ``tiles`` in runs of at most ``batch_size`` tiles of one run shape (corner, edge and interior
    tiles differ by their context). With ``batch_size=1``, one run per tile in row order."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for k, tile in enumerate(tiles):
        by_shape.setdefault(tile.run_shape, []).append(k)
    return [members[i : i + batch_size] for members in by_shape.values() for i in range(0, len(members), batch_size)]


def num_runs(image: torch.Tensor, tile_shape: tuple[int, int], tile_padding: int, batch_size: int) -> int:
    return len(tile_batches(tiles_of(*image.shape[1:], tile_shape, tile_padding), batch_size))


def run_tiled(lq: torch.Tensor, restore: Callable[[torch.Tensor, list[int]], torch.Tensor], scale: int,
              tile_shape: tuple[int, int], tile_padding: int, blending: bool, batch_size: int = 1) -> torch.Tensor:
    """Restore one image (1, 3, H, W) tile by tile: ``restore(tiles, indices)`` gets a batch (n, 3, h, w) of tiles
    with their context, and their indices in row order, and returns their ×``scale`` results on the CPU. Runs
    batch up to ``batch_size`` tiles of one shape (see :func:`tile_batches`). Returns (1, 3, sH, sW) on the CPU;
    besides it, only one weight map of that size is held."""
    _, _, height, width = lq.shape
    tiles = tiles_of(height, width, tile_shape, tile_padding)
    out = torch.zeros(1, 3, height * scale, width * scale)
    weight = torch.zeros(1, 1, height * scale, width * scale) if blending else None
    for batch in tile_batches(tiles, batch_size):
        crops = torch.cat([lq[:, :, t.py0 : t.py1, t.px0 : t.px1] for t in (tiles[k] for k in batch)])
        for k, result in zip(batch, restore(crops, batch)):
            _paste(out, weight, result[None], tiles[k], height, width, tile_padding, scale)
    return out if weight is None else out.div_(weight.clamp_(min=1e-12))  # in place: full-size buffers are large


def _paste(out, weight, result, t: Tile, height: int, width: int, tile_padding: int, scale: int) -> None:
    """Add one tile's result to the output: its core pasted (``weight`` None), or its whole extent blended."""
    s = scale
    if weight is None:
        core = result[:, :, (t.y0 - t.py0) * s : (t.y1 - t.py0) * s, (t.x0 - t.px0) * s : (t.x1 - t.px0) * s]
        out[:, :, t.y0 * s : t.y1 * s, t.x0 * s : t.x1 * s] = core
        return
    ramp_y = overlap_ramp(t.py0, t.py1, t.y0, t.y1, height, tile_padding, s)
    ramp_x = overlap_ramp(t.px0, t.px1, t.x0, t.x1, width, tile_padding, s)
    w = ramp_y[:, None] * ramp_x[None, :]
    out[:, :, t.py0 * s : t.py1 * s, t.px0 * s : t.px1 * s] += result * w
    weight[:, :, t.py0 * s : t.py1 * s, t.px0 * s : t.px1 * s] += w


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
