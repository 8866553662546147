"""What a plain ``pip install iter-diffusers`` gives: the bundled model by name, loaded without warnings."""

import runpy
import warnings
from pathlib import Path
from unittest import mock

import torch

import iter_diffusers
from iter_diffusers import ITERPipeline


def test_the_bundled_model_loads_from_its_exported_path_without_an_accelerate_warning(capfd):
    pipe = ITERPipeline.from_pretrained(iter_diffusers.DEMO_MODEL_PATH)
    assert pipe.upscale_factor == 4
    assert "accelerate" not in capfd.readouterr().err  # diffusers warns at every load when accelerate is missing


def test_a_dtype_cast_prints_no_warning(capfd):
    pipe = ITERPipeline.from_pretrained(iter_diffusers.DEMO_MODEL_PATH)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.to("cpu", torch.bfloat16)
    assert capfd.readouterr().err == "" and not caught  # diffusers warned "... kept in float32: []" four times
    assert {pipe.vqvae.dtype, pipe.encoder.dtype, pipe.evaluator.dtype, pipe.refiner.dtype} == {torch.bfloat16}


def _setup_arguments() -> dict:
    """What setup.py passes to setuptools.setup (read from the source, not from the installed metadata)."""
    captured = {}
    with mock.patch("setuptools.setup", lambda **arguments: captured.update(arguments)):
        runpy.run_path(str(Path(__file__).parents[1] / "setup.py"))
    return captured


def test_no_requirement_of_ours_caps_a_version():
    """An upper bound in our requirements would downgrade what a user has (gradio's own pillow<13 is gradio's)."""
    arguments = _setup_arguments()
    requirements = arguments["install_requires"] + sum(arguments["extras_require"].values(), [])
    assert [r for r in requirements if any(op in r for op in ("<", "==", "~=", "!="))] == []
