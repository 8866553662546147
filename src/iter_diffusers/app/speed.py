"""How long a run will take: seconds per LQ pixel and step, measured on this machine.

The speed is measured once when a model is loaded (a small calibration run) and again after every run, the
latest measurement replacing the previous one. Runs with ITER's per-step view decode one image per step, so
they are timed apart from plain runs. The estimate is linear in pixels and steps: an estimate, not a promise
(steps skipped by the adaptive start make runs faster; tiles add their padding).
"""

from __future__ import annotations

import time

import numpy as np
import torch

CALIBRATION_SIDE = 64


class SpeedMeter:
    """The latest measured seconds per LQ pixel per refinement step, for plain and per-step-view runs."""

    def __init__(self) -> None:
        self._seconds_per_pixel_step: dict[bool, float] = {}

    def record(self, pixels: int, steps: int, per_step_view: bool, seconds: float) -> None:
        """Note how long a run of ``pixels`` LQ pixels and ``steps`` steps took."""
        self._seconds_per_pixel_step[per_step_view] = seconds / (pixels * steps)

    def estimate(self, pixels: int, steps: int, per_step_view: bool) -> float:
        """Expected seconds for a run of ``pixels`` LQ pixels and ``steps`` steps."""
        return self._seconds_per_pixel_step[per_step_view] * pixels * steps


def calibrate(pipe) -> SpeedMeter:
    """Time a 64×64 noise image through ``pipe`` (untiled) with and without the per-step images, at the model's
    own T and α: the first estimate is then right for the default settings, even where α skips every step (the
    bundled model's α = 0), which a per-step rate measured at another T would scale wrongly."""
    meter = SpeedMeter()
    steps = pipe.config.num_inference_steps
    noise = np.random.default_rng(0).random((CALIBRATION_SIDE, CALIBRATION_SIDE, 3), dtype=np.float32)
    for per_step_view in (False, True):
        started = time.perf_counter()
        pipe(noise, num_inference_steps=steps, tile_size=None, return_intermediates=per_step_view,
             generator=torch.Generator().manual_seed(0), output_type="np")
        meter.record(CALIBRATION_SIDE**2, steps, per_step_view, time.perf_counter() - started)
    return meter


def format_duration(seconds: float) -> str:
    """``"about 40 s"``, ``"about 3 min"``, ``"about 1.5 h"``."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {round(seconds)} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
