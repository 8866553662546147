"""Parity with the official ITER code on the tiny fixtures, through the real conversion path.

Tolerances from the fixture notes: tokens and masks exact; logits, probabilities and images within 1e-4.
"""

import pytest
import torch

from conftest import seeded
from iter_diffusers.pipelines.image_io import mirror_pad

ATOL = 1e-4


@pytest.fixture(scope="module")
def parity(official_dir):
    return torch.load(official_dir / "tiny_parity.pt", weights_only=True)


@pytest.mark.parametrize("case", ["x_40x48", "x_64x64"])
def test_output_matches_official_test(pipe, parity, case):
    expected = parity[case]
    out = pipe(expected["input"], generator=seeded(123), output_type="pt")
    assert out.images.shape == expected["output"].shape
    assert (out.images - expected["output"]).abs().max() < ATOL


@pytest.mark.parametrize("case", ["x_40x48", "x_64x64"])
def test_intermediates_match_official(pipe, parity, case):
    expected = parity[case]
    x = expected["input"]
    h, w = x.shape[2:]
    multiple = pipe.pad_multiple
    padded = mirror_pad(x, (h // multiple + 1) * multiple, (w // multiple + 1) * multiple)
    assert torch.equal(padded, expected["padded_input"])

    with torch.no_grad():
        logits = pipe.encoder(padded).logits
        lq_tokens = logits.argmax(1)
        crit = pipe.evaluator(lq_tokens, lq_tokens).logits
    assert (logits - expected["lq_token_logits"]).abs().max() < ATOL
    assert torch.equal(lq_tokens, expected["lq_tokens"][:, 0])
    assert (crit - expected["init_mask_logits"]).abs().max() < ATOL
    assert (crit.softmax(1)[:, 1] - expected["init_mask_prob"][:, 0]).abs().max() < ATOL
    assert torch.equal(pipe.scheduler.trusted_mask(crit), expected["init_mask_binary"][:, 0])

    # Record every φ_e / φ_r call made by the pipeline.
    calls = {"evaluator": [], "refiner": []}
    hooks = [getattr(pipe, name).register_forward_hook(lambda m, a, k, o, name=name: calls[name].append((a, k, o.logits.clone())),
                                                       with_kwargs=True)
             for name in calls]
    try:
        out = pipe(x, generator=seeded(123), output_type="pt", return_intermediates=True)
    finally:
        for hook in hooks:
            hook.remove()

    steps, skipped = len(expected["refined_tokens"]), expected["num_skipped_steps"]
    decoded = [pipe.vqvae.decode(t[:, 0]).sample for t in expected["refined_tokens"]]
    # the official sampler records every step of the schedule; the pipeline returns the steps that run
    assert len(out.intermediate_masks) == len(out.intermediate_images) == steps - skipped
    for ran, step in enumerate(range(skipped, steps)):
        assert torch.equal(out.intermediate_masks[ran][0], expected["eval_refine_masks"][step][0, 0])
        assert (out.intermediate_images[ran] - decoded[step][..., : 4 * h, : 4 * w]).abs().max() < ATOL
    assert len(calls["refiner"]) == expected["num_refine_calls"]
    assert steps - len(calls["refiner"]) == skipped
    # φ_r sees, per call, the init mask B and the step's keep-mask.
    for (args, kwargs, _), (init_mask, mask) in zip(calls["refiner"], zip(*[iter(expected["refine_input_masks"])] * 2)):
        assert torch.equal(kwargs["trusted_mask"], init_mask[:, 0])
        assert torch.equal(kwargs["visible_mask"], mask[:, 0])
    assert (calls["refiner"][-1][2] - expected["final_refined_logits"]).abs().max() < ATOL
    if expected.get("refine_logits_first") is not None:  # stored for the 40x48 case only
        assert (calls["refiner"][0][2] - expected["refine_logits_first"]).abs().max() < ATOL
    # The official code calls φ_e twice on S_l and once after the last step; we call it once and skip the last.
    official_needed = [expected["crit_logits_per_call"][1]] + expected["crit_logits_per_call"][2:-1]
    assert len(calls["evaluator"]) == len(official_needed)
    for (_, _, ours), theirs in zip(calls["evaluator"], official_needed):
        assert (ours - theirs).abs().max() < ATOL
    for call, mask in zip(expected["sample_t_calls"], out.intermediate_masks[1:]):
        assert torch.equal(mask[0], call["mask_out"][0, 0])
        assert mask[0].sum().item() == call["k_requested"]


def test_tiled_output_matches_official_test_tile(pipe, official_dir):
    expected = torch.load(official_dir / "tiny_tile_parity.pt", weights_only=True)
    out = pipe(expected["input"], generator=seeded(123), output_type="pt", tile_size=32, tile_padding=8,
               tile_blending=False)
    assert out.images.shape == expected["output"].shape
    assert (out.images - expected["output"]).abs().max() < ATOL


def test_vqgan_matches_official(pipe, official_dir):
    expected = torch.load(official_dir / "tiny_vqgan_parity.pt", weights_only=True)
    vq = pipe.vqvae
    with torch.no_grad():
        latents = vq.encode(expected["input"]).latents
        quant, loss, (_, _, indices) = vq.quantize(latents)
        forward = vq(expected["input"])
        decoded = vq.decode(expected["indices"][:, 0]).sample
    assert (latents - expected["prequant"]).abs().max() < ATOL
    assert (quant - expected["quant"]).abs().max() < ATOL
    assert torch.equal(indices, expected["indices"][:, 0])
    assert (decoded - expected["decode_indices_out"]).abs().max() < ATOL
    assert (forward.sample - expected["forward_out"]).abs().max() < ATOL
    assert abs(forward.commit_loss.item() - expected["emb_loss"].item()) < ATOL


@pytest.mark.parametrize("case", ["x_40x48", "x_64x64"])
def test_callbacks_and_progress_count_the_steps_that_run(pipe, parity, case, capsys):
    """The official fixture skips 4 of its 8 steps (adaptive start): 4 callbacks, with their schedule indices, and
    a progress bar of 4."""
    expected, seen = parity[case], []
    pipe.set_progress_bar_config(disable=False)
    capsys.readouterr()
    try:
        pipe(expected["input"], generator=seeded(123), output_type="pt",
             callback_on_step_end=lambda p, i, t, kwargs: seen.append(i) or {})
    finally:
        pipe.set_progress_bar_config(disable=True)
    steps, skipped = len(expected["refined_tokens"]), expected["num_skipped_steps"]
    assert seen == list(range(skipped, steps))
    assert f"{steps - skipped}/{steps - skipped}" in capsys.readouterr().err
