"""The colour / low-frequency fixes and the pipeline's ``color_fix`` setting."""

import json

import pytest
import torch
import torch.nn.functional as F

from iter_diffusers import ITERPipeline
from iter_diffusers.pipelines.color_fix import (adain_color_fix, apply_color_fix, upsample_reference,
                                                wavelet_color_fix, wavelet_low_band)

S = 4


def smooth(height=64, width=80, seed=0):
    """A smooth colour field (only low frequencies) in [0.2, 0.8]."""
    coarse = torch.rand(1, 3, 4, 5, generator=torch.Generator().manual_seed(seed))
    return 0.2 + 0.6 * F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def checkerboard(height=64, width=80, amplitude=0.1):
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return amplitude * (((y + x) % 2) * 2 - 1).float().expand(1, 3, height, width)


@pytest.mark.parametrize("levels", [1, 2])
def test_wavelet_keeps_restored_detail_on_reference_colours(levels):
    reference, other_colours = smooth(seed=0), smooth(seed=1)
    detail = checkerboard()
    fixed = wavelet_color_fix(other_colours + detail, reference, levels)
    # the finest detail (period 2 px) is entirely in the high band: it survives on the reference's colours
    interior = (..., slice(2**levels, -(2**levels)), slice(2**levels, -(2**levels)))
    error = (fixed - (reference + detail))[interior].abs()
    assert error.mean() < 0.02
    # without the fix the colours are the other field's
    assert (other_colours - reference)[interior].abs().mean() > 0.05


def test_wavelet_of_the_reference_itself_is_the_identity():
    reference = smooth() + checkerboard(amplitude=0.05)
    assert torch.allclose(wavelet_color_fix(reference, reference, 3), reference.clamp(0, 1), atol=1e-6)


def test_wavelet_low_band_preserves_constants_and_handles_tiny_images():
    for size in ((64, 64), (3, 5), (1, 1)):
        constant = torch.full((1, 3, *size), 0.25)
        assert torch.allclose(wavelet_low_band(constant, 5), constant, atol=1e-6)


def test_adain_matches_channel_statistics():
    restored, reference = torch.rand(2, 3, 32, 32) * 0.5, smooth(32, 32)
    fixed = adain_color_fix(restored, reference.expand(2, -1, -1, -1))
    assert torch.allclose(fixed.mean((2, 3)), reference.mean((2, 3)).expand(2, -1), atol=2e-3)
    assert torch.allclose(fixed.std((2, 3)), reference.std((2, 3)).expand(2, -1), atol=2e-3)


def test_apply_color_fix_compares_with_the_bicubic_input():
    lq = torch.rand(1, 3, 16, 20)
    restored = torch.rand(1, 3, 16 * S, 20 * S)
    assert apply_color_fix(restored, lq, None, 5) is restored
    expected = wavelet_color_fix(restored, upsample_reference(lq, 16 * S, 20 * S), 2)
    assert torch.equal(apply_color_fix(restored, lq, "wavelet", 2), expected)
    with pytest.raises(ValueError, match="color_fix"):
        apply_color_fix(restored, lq, "histogram", 2)
    with pytest.raises(ValueError, match="color_fix_levels"):
        wavelet_color_fix(restored, restored, 0)


# ---------------------------------------------------------------------------------------------- pipeline


def run(pipe, x, **kwargs):
    return pipe(x, generator=torch.Generator().manual_seed(0), output_type="pt", num_inference_steps=2,
                **kwargs).images


def test_pipeline_color_fix_is_a_saved_setting(pipe, tmp_path):
    assert pipe.config.color_fix is None  # converted official weights: no fix, exact parity
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    plain = run(pipe, x)
    assert torch.equal(run(pipe, x, color_fix="none"), plain)
    fixed = run(pipe, x, color_fix="wavelet")
    assert torch.equal(fixed, apply_color_fix(plain, x, "wavelet", 5))
    assert torch.equal(run(pipe, x, color_fix="wavelet", color_fix_levels=2), apply_color_fix(plain, x, "wavelet", 2))

    pipe.register_to_config(color_fix="wavelet", color_fix_levels=2)
    try:
        pipe.save_pretrained(tmp_path)
    finally:
        pipe.register_to_config(color_fix=None, color_fix_levels=5)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert (index["color_fix"], index["color_fix_levels"]) == ("wavelet", 2)
    loaded = ITERPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert (loaded.config.color_fix, loaded.config.color_fix_levels) == ("wavelet", 2)
    assert torch.allclose(run(loaded, x), apply_color_fix(plain, x, "wavelet", 2), atol=1e-5)
    assert torch.allclose(run(loaded, x, color_fix="none"), plain, atol=1e-5)
    overridden = ITERPipeline.from_pretrained(tmp_path, color_fix="adain")
    assert overridden.config.color_fix == "adain"


def test_pipeline_color_fix_applies_to_every_step_image(pipe):
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(2))
    out = pipe(x, generator=torch.Generator().manual_seed(0), output_type="pt", num_inference_steps=2,
               return_intermediates=True, color_fix="adain")
    plain = pipe(x, generator=torch.Generator().manual_seed(0), output_type="pt", num_inference_steps=2,
                 return_intermediates=True)
    for fixed_step, plain_step in zip(out.intermediate_images, plain.intermediate_images):
        assert torch.allclose(fixed_step, apply_color_fix(plain_step, x, "adain", 5), atol=1e-6)


@pytest.mark.parametrize("bad", ["wavelets", 3, "None"])
def test_pipeline_rejects_unknown_color_fix(pipe, bad):
    with pytest.raises(ValueError, match="color_fix"):
        pipe(torch.rand(1, 3, 8, 8), color_fix=bad)
    with pytest.raises(ValueError, match="color_fix"):
        ITERPipeline(**pipe.components, color_fix=bad)


@pytest.mark.parametrize("bad", [0, 2.0, True])
def test_pipeline_rejects_bad_color_fix_levels(pipe, bad):
    with pytest.raises(ValueError, match="color_fix_levels"):
        ITERPipeline(**pipe.components, color_fix="wavelet", color_fix_levels=bad)
