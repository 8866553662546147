"""Parity with the official ITER code on legal but unusual configurations, through the real conversion path.

The fixtures ``tiny_x2w4_*`` and ``tiny_x4w2_*`` (recipe in ``fixtures/official/README.md``) were made by the
official code: a VQGAN whose Swin window (4, 2) differs from the 8 that the official code hard-codes for E_l, φ_e
and φ_r, an x2 model (two E_l down stages), and widths / depths / ch_mult other than the first tiny fixture's.
``tiny_x4clamp_*``: a VQGAN Swin map (resolution 96 / 8 = 12) no larger than its configured window (16), so SwinIR
clamps the window to 12 and shifts in no block (the odd blocks store no ``attn_mask``); the padding then follows
lcm(8, 12) = 24 tokens. ``tiny_x4rect_*``: a non-square VQGAN ``resolution`` ([64, 96]: an 8×12 map, window 4,
shifted), so its stored ``attn_mask`` buffers are made for a non-square map.
Tolerances as in test_parity.py: tokens and masks exact, logits and images within 1e-4.
"""

import math

import pytest
import torch

from conftest import seeded
from iter_diffusers.pipelines.image_io import mirror_pad

ATOL = 1e-4

#: fixture name -> (scale, VQGAN Swin window as SwinIR runs it, whether its odd blocks shift, the input cases)
FIXTURES = {
    "tiny_x2w4": (2, 4, True, ("x_40x48", "x_30x72")),
    "tiny_x4w2": (4, 2, True, ("x_28x36", "x_24x36")),
    "tiny_x4clamp": (4, 12, False, ("x_40x36", "x_84x32")),
    "tiny_x4rect": (4, 4, True, ("x_20x40", "x_40x24")),
}
CASES = [(name, case) for name, (*_, cases) in FIXTURES.items() for case in cases]


def _official_vq_window(ddconfig: dict) -> tuple[int, bool]:
    """SwinIR's rule for the VQGAN's Swin blocks: the map is ``resolution / 2^(len(ch_mult)-1)``; where its smaller
    side is no larger than ``swin_window`` the window becomes that side and no block shifts."""
    resolution = ddconfig["resolution"]
    side = min(r // 2 ** (len(ddconfig["ch_mult"]) - 1) for r in resolution)
    if side <= ddconfig["swin_window"]:
        return side, False
    return ddconfig["swin_window"], True


def _ready(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _Converted(dict):
    """Each fixture's official checkpoints converted on first use (what scripts/convert_weights.py runs), so a
    configuration that fails to convert fails only its own tests."""

    def __init__(self, official_dir):
        super().__init__()
        self.official_dir = official_dir

    def __missing__(self, name):
        from iter_diffusers.conversion.pipeline import convert_official_checkpoints

        scale = FIXTURES[name][0]
        self[name] = _ready(convert_official_checkpoints(self.official_dir / f"{name}_swinvqgan.pth",
                                                         self.official_dir / f"{name}_iter_x{scale}.pth"))
        return self[name]


@pytest.fixture(scope="module")
def converted(official_dir):
    return _Converted(official_dir)


@pytest.fixture(scope="module")
def parity(official_dir):
    return {name: torch.load(official_dir / f"{name}_parity.pt", weights_only=True) for name in FIXTURES}


def _run(pipe, x):
    images = pipe(x, generator=seeded(123), output_type="pt", tile_size=None).images
    tokens = pipe(x, generator=seeded(123), output_type="latent", tile_size=None).images
    return images, tokens


def _assert_matches(pipe, expected):
    images, tokens = _run(pipe, expected["input"])
    assert images.shape == expected["output"].shape
    assert (images - expected["output"]).abs().max().item() <= ATOL
    assert torch.equal(tokens, expected["final_tokens"][:, 0])


@pytest.mark.parametrize("name", list(FIXTURES))
def test_converted_configuration(converted, parity, name):
    """The converter reads the unusual numbers off the tensors: scale, the VQGAN's own window (clamped to its map
    where SwinIR clamps it) and shift, E_l/φ at 8 and shifted."""
    scale, vq_window, vq_shift, _ = FIXTURES[name]
    pipe, meta = converted[name], parity[name]["meta"]
    ddconfig = meta["vqgan_opt"]["ddconfig"]
    assert (vq_window, vq_shift) == _official_vq_window(ddconfig)
    assert pipe.vqvae.config.swin_window_size == vq_window
    assert pipe.vqvae.config.swin_shift_windows is vq_shift
    for part in (pipe.encoder, pipe.evaluator, pipe.refiner):
        assert part.config.swin_window_size == 8
    assert pipe.token_window == math.lcm(8, vq_window)  # tiny_x4clamp: 24 tokens, the official code pads to 8
    assert pipe.encoder.config.scale_factor == scale == meta["model_opts"]["scale_factor"]
    assert list(pipe.vqvae.config.channel_multipliers) == ddconfig["ch_mult"]
    assert pipe.vqvae.config.base_channels == ddconfig["nf"]
    assert pipe.vqvae.config.num_vq_embeddings == meta["vqgan_opt"]["n_embed"]
    assert pipe.vqvae.config.latent_channels == meta["vqgan_opt"]["embed_dim"]


def test_fixtures_hold_the_unusual_buffers(official_dir):
    """What makes tiny_x4clamp and tiny_x4rect unusual is in their official VQGAN files: no shift mask in any block
    (window-12 tables), and shift masks made for a non-square 8×12 map (2×3 windows of 4×4)."""
    clamp = torch.load(official_dir / "tiny_x4clamp_swinvqgan.pth", weights_only=True)["params"]
    assert not [k for k in clamp if k.endswith("attn_mask")]
    tables = [v for k, v in clamp.items() if k.endswith("relative_position_bias_table")]
    assert tables and all(t.shape[0] == (2 * 12 - 1) ** 2 for t in tables)
    rect = torch.load(official_dir / "tiny_x4rect_swinvqgan.pth", weights_only=True)["params"]
    masks = [v for k, v in rect.items() if k.endswith("attn_mask")]
    assert masks and all(tuple(m.shape) == (6, 16, 16) for m in masks)


@pytest.mark.parametrize("name,case", CASES)
def test_output_matches_official_test(converted, parity, name, case):
    _assert_matches(converted[name], parity[name][case])


@pytest.mark.parametrize("name,case", CASES)
def test_intermediates_match_official(converted, parity, name, case):
    """Stage by stage (padding, S_l, φ_e on S_l, B, the per-step masks), so a failure says where it starts."""
    pipe, expected = converted[name], parity[name][case]
    x = expected["input"]
    h, w = x.shape[2:]
    # The official pad: up to the next multiple of 8 // scale * 8 pixels, always at least one pixel.
    official_multiple = 8 // FIXTURES[name][0] * 8
    official_size = ((h // official_multiple + 1) * official_multiple, (w // official_multiple + 1) * official_multiple)
    assert tuple(pipe.padded_size(h, w)) == official_size
    assert tuple(expected["lq_tokens"].shape[2:]) == tuple(s // pipe.encoder.pixels_per_token for s in official_size)
    with torch.no_grad():
        logits = pipe.encoder(mirror_pad(x, *official_size)).logits
        lq_tokens = logits.argmax(1)
        crit = pipe.evaluator(lq_tokens, lq_tokens).logits
    assert (logits - expected["lq_token_logits"]).abs().max().item() <= ATOL
    assert torch.equal(lq_tokens, expected["lq_tokens"][:, 0])
    assert (crit - expected["init_mask_logits"]).abs().max().item() <= ATOL
    assert torch.equal(pipe.scheduler.trusted_mask(crit), expected["init_mask_binary"][:, 0])

    refiner_calls = []
    hook = pipe.refiner.register_forward_hook(lambda *args: refiner_calls.append(1))
    try:
        out = pipe(x, generator=seeded(123), output_type="pt", tile_size=None, return_intermediates=True)
    finally:
        hook.remove()
    assert len(refiner_calls) == expected["num_refine_calls"]
    assert 0 < expected["num_skipped_steps"] < len(expected["refined_tokens"])  # the skip and sample_t paths ran
    # the official sampler records every step of the schedule; the pipeline returns the steps that run
    ran = expected["eval_refine_masks"][expected["num_skipped_steps"]:]
    assert len(out.intermediate_masks) == len(ran)
    for step, mask in enumerate(ran):
        assert torch.equal(out.intermediate_masks[step][0], mask[0, 0])
    assert (out.images - expected["output"]).abs().max().item() <= ATOL


@pytest.mark.parametrize("name", list(FIXTURES))
def test_save_pretrained_round_trip_still_matches(converted, parity, name, tmp_path):
    from iter_diffusers import ITERPipeline

    converted[name].save_pretrained(tmp_path / name)
    reloaded = _ready(ITERPipeline.from_pretrained(tmp_path / name))
    assert reloaded.vqvae.config.swin_window_size == FIXTURES[name][1]
    assert reloaded.vqvae.config.swin_shift_windows is FIXTURES[name][2]
    for case in FIXTURES[name][3]:
        _assert_matches(reloaded, parity[name][case])
