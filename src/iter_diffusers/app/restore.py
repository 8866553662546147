"""Run ITER on one image for the page: whole (with the per-step view) or tiled, with progress reports.

An input runs whole when ``tile_size="auto"`` would not tile it; then the pipeline also returns the image and the
keep-mask after every step (``return_intermediates=True``, which tiling does not support). Larger inputs run in
tiles, as with ``iter-sr``, and give the result only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import PIL.Image
import torch

from ..cli.images import LoadedImage, compose_output
from .models import LoadedModel
from .views import mask_image, to_pil

TILE_PADDING = 16  # LQ pixels of context around each tile (the pipeline's and the official default)

#: ``report(done, total, what)``: progress in refinement steps (over all tiles) and what is running.
Reporter = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Settings:
    """The sampling choices of the page; None = the model's own default."""

    num_inference_steps: int = 8
    mask_threshold: float | None = None
    token_temperature: float | None = None
    mask_temperature: float | None = None
    seed: int = 123
    color_fix: str | None = None


@dataclass(frozen=True)
class Plan:
    """How an input runs: whole (``tile_shape`` None, with the per-step view) or in ``num_tiles`` tiles."""

    tile_shape: tuple[int, int] | None
    num_tiles: int = 1

    @property
    def per_step_view(self) -> bool:
        return self.tile_shape is None


@dataclass
class StepView:
    """ITER after one executed refinement step."""

    index: int  # in the schedule, from 0
    image: PIL.Image.Image  # the image decoded from the tokens after the step
    mask: PIL.Image.Image  # the keep-mask used in the step: white = kept, black = re-predicted by φ_r
    kept_tokens: int
    num_tokens: int


@dataclass
class Restoration:
    """The outcome of one run."""

    result: PIL.Image.Image  # full resolution, like iter-sr's PNG output (grey and alpha kept)
    plan: Plan
    num_inference_steps: int
    steps: list[StepView]  # one per executed step (the adaptive start skips a prefix); empty when tiled
    seconds: float


def plan_run(pipe, width: int, height: int) -> Plan:
    """Whole or tiled, as the pipeline's ``tile_size="auto"`` decides for this size and model (on any machine)."""
    tile = pipe.auto_tile_shape(height, width, TILE_PADDING)
    if tile is None:
        return Plan(None)
    return Plan(tile, math.ceil(height / tile[0]) * math.ceil(width / tile[1]))


def per_step_limit(pipe, largest: int = 4096) -> int:
    """The largest square side (LQ pixels) that runs whole, hence with the per-step view."""
    low, high = 1, largest
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if plan_run(pipe, middle, middle).per_step_view else (low, middle - 1)
    return low


class StepProgress:
    """``callback_on_step_end``: reports progress and notes the first step the pipeline executed.

    The callback fires only for the steps that run: the scheduler's adaptive start skips those whose schedule
    keeps fewer tokens than φ_e already trusts, and those count as done at once. A step index that does not
    grow means the next tile started.
    """

    def __init__(self, steps_per_tile: int, num_tiles: int, report: Reporter | None = None) -> None:
        self.steps_per_tile, self.num_tiles = steps_per_tile, num_tiles
        self.report = report or (lambda done, total, what: None)
        self.tile, self.last_step = 0, None
        self.first_step: int | None = None

    def __call__(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        if self.first_step is None:
            self.first_step = step
        if self.last_step is not None and step <= self.last_step:
            self.tile += 1
        self.last_step = step
        done, total = self.tile * self.steps_per_tile + step + 1, self.steps_per_tile * self.num_tiles
        what = f"refinement step {step + 1} of {self.steps_per_tile}"
        if self.num_tiles > 1:
            what = f"tile {self.tile + 1} of {self.num_tiles}, {what}"
        if done >= total:
            what += "; decoding the images"
        self.report(min(done, total), total, what)
        return callback_kwargs


def restore(model: LoadedModel, image: LoadedImage, settings: Settings, report: Reporter | None = None) -> Restoration:
    """Super-resolve ``image``; the speed measured is recorded in ``model.speed``."""
    pipe = model.pipe
    width, height = image.size
    plan = plan_run(pipe, width, height)
    steps = settings.num_inference_steps
    progress = StepProgress(steps, plan.num_tiles, report)
    started = time.perf_counter()
    output = pipe(
        image.rgb,
        num_inference_steps=steps,
        mask_threshold=settings.mask_threshold,
        token_temperature=settings.token_temperature,
        mask_temperature=settings.mask_temperature,
        generator=torch.Generator().manual_seed(settings.seed),
        color_fix=settings.color_fix,
        tile_size=None if plan.per_step_view else "auto",
        tile_padding=TILE_PADDING,
        return_intermediates=plan.per_step_view,
        output_type="np",
        callback_on_step_end=progress,
    )
    seconds = time.perf_counter() - started
    model.speed.record(width * height, steps, plan.per_step_view, seconds)
    result, _, _ = compose_output(output.images[0], image, "png")
    if not plan.per_step_view:
        return Restoration(result, plan, steps, [], seconds)
    views = [_step_view(pipe, output, ran, progress.first_step + ran, image.size)
             for ran in range(len(output.intermediate_images))]
    return Restoration(result, plan, steps, views, seconds)


def _step_view(pipe, output, ran: int, index: int, lq_size: tuple[int, int]) -> StepView:
    """The ``ran``-th step that ran (step ``index`` of the schedule) of a run with intermediates: its image, and its
    keep-mask over the tokens of the input."""
    per_token = pipe.encoder.pixels_per_token
    columns, rows = (math.ceil(side / per_token) for side in lq_size)
    kept = output.intermediate_masks[ran][0][:rows, :columns].cpu().numpy() > 0.5
    image = to_pil(output.intermediate_images[ran][0])
    mask = mask_image(kept, per_token * pipe.upscale_factor, image.size)
    return StepView(index, image, mask, int(kept.sum()), kept.size)
