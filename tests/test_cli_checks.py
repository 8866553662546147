"""``iter-sr`` refuses the values that ``pipe(...)`` refuses, with the same message (the pipeline's checks)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from iter_diffusers.cli.arguments import COLOR_FIX_CHOICES
from iter_diffusers.cli.upscale import main
from iter_diffusers.pipelines.color_fix import COLOR_FIXES

# (iter-sr option, pipe(...) keyword, refused value)
REFUSED = [
    ("--alpha", "mask_threshold", 1.5),
    ("--alpha", "mask_threshold", -0.5),
    ("--steps", "num_inference_steps", 0),
    ("--steps", "num_inference_steps", 2.5),
    ("--tile", "tile_size", -3),
    ("--tile_padding", "tile_padding", -1),
    ("--color_fix", "color_fix", "sharpen"),
]


def _cli_error(option: str, value) -> str:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(["-i", "in.png", "-o", "out", option, str(value)]) == 2
    (line,) = [line for line in err.getvalue().splitlines() if line.startswith("iter-sr: error:")]
    return line.removeprefix(f"iter-sr: error: argument {option}: ")


@pytest.mark.parametrize("option, keyword, value", REFUSED)
def test_cli_and_api_refuse_with_the_same_message(pipe, option, keyword, value):
    with pytest.raises(ValueError) as refused:
        pipe(np.zeros((16, 20, 3), np.float32), **{keyword: value}, output_type="np")
    assert _cli_error(option, value) == str(refused.value)


def test_color_fix_choices_shown_in_the_help_are_the_pipelines():
    assert COLOR_FIX_CHOICES == (*COLOR_FIXES, "none")
