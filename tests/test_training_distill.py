"""--stage distill: slimmer networks that learn the teacher pipeline's outputs, with its codebook and φ_e, φ_r kept."""

import json
import shutil

import pytest
import torch
from test_training import _weights, common, launch, photos  # noqa: F401 (photos: a fixture)

from iter_diffusers import ITERPipeline, ITERUpsamplingEncoder, ITERVQModel
from iter_diffusers.training.distillation import distillation_losses, init_from_teacher


def _tiny_vqgan(**overrides) -> ITERVQModel:
    config = dict(base_channels=8, channel_multipliers=(1, 2, 2, 4), layers_per_block=1, latent_channels=16,
                  num_vq_embeddings=32, swin_dim=32, swin_depth=1, swin_num_heads=2, norm_num_groups=4)
    return ITERVQModel(**{**config, **overrides}).eval()


def test_a_student_starts_from_every_teacher_tensor_of_its_shape():
    torch.manual_seed(0)
    teacher = _tiny_vqgan()
    student = _tiny_vqgan(base_channels=4, channel_multipliers=(1, 4, 4, 8))  # only the top level narrows
    copied, total = init_from_teacher(student, teacher)
    theirs, ours = teacher.state_dict(), student.state_dict()
    same = [k for k in ours if k in theirs and theirs[k].shape == ours[k].shape]
    assert copied == len(same) and 0 < copied < total
    assert all(torch.equal(ours[k], theirs[k]) for k in same)
    assert torch.equal(ours["quantize.embedding.weight"], theirs["quantize.embedding.weight"])
    assert ours["decoder.conv_out.weight"].shape[1] == 4 and theirs["decoder.conv_out.weight"].shape[1] == 8


def test_distillation_losses_vanish_for_an_exact_copy_and_not_for_a_slimmer_student():
    torch.manual_seed(0)
    teacher = _tiny_vqgan()
    encoder = ITERUpsamplingEncoder.from_vqgan(teacher, scale_factor=4).eval()
    copy = _tiny_vqgan()
    init_from_teacher(copy, teacher)
    copy_encoder = ITERUpsamplingEncoder(**encoder.config).eval()
    init_from_teacher(copy_encoder, encoder)
    hq = torch.rand(2, 3, 64, 64)
    lq = torch.nn.functional.interpolate(hq, scale_factor=0.25, mode="area")
    total, terms = distillation_losses({"vqvae": copy, "encoder": copy_encoder}, teacher, encoder, lq, hq)
    assert float(total.detach()) < 1e-6 and float(terms["decoder_psnr"]) > 80
    slim = _tiny_vqgan(base_channels=4, channel_multipliers=(1, 4, 4, 8)).train()
    init_from_teacher(slim, teacher)
    total, terms = distillation_losses({"vqvae": slim}, teacher, encoder, lq, hq)
    assert set(terms) == {"distill_decoder_l1", "distill_tokenizer_mse", "decoder_psnr"}
    assert float(total.detach()) > 1e-3
    total.backward()
    assert all(p.grad is not None for n, p in slim.named_parameters() if n.startswith(("decoder.", "encoder.")))


def test_distill_stage_slims_the_vqgan_and_keeps_the_codebook_and_the_token_networks(converted_dir, photos,
                                                                                      tmp_path):
    """The tiny official pipeline teaches a VQGAN and an E_l with one block per stage (the official E_l has no
    latents: its student learns the token distribution); φ_e, φ_r and the codebook are the teacher's."""
    config = tmp_path / "slim.json"
    config.write_text(json.dumps({"_comment": "test", "vqvae": {"base_channels": 4, "channel_multipliers": [1, 4, 4, 8]},
                                  "encoder": {"blocks_per_stage": 1}}))
    teacher_dir = tmp_path / "teacher"  # with defaults of its own, which the student must keep
    shutil.copytree(converted_dir, teacher_dir)
    defaults = {"color_fix": "wavelet", "color_fix_levels": 2, "num_inference_steps": 3}
    index = json.loads((teacher_dir / "model_index.json").read_text())
    (teacher_dir / "model_index.json").write_text(json.dumps(index | defaults))
    out = tmp_path / "slim"
    launch("--stage", "distill", *common(teacher_dir, photos, out, 2), "--model_config", config)
    assert {k: json.loads((out / "model_index.json").read_text())[k] for k in defaults} == defaults
    for name in ("evaluator", "refiner"):
        start, saved = _weights(converted_dir, name), _weights(out, name)
        assert all(torch.equal(start[k], saved[k]) for k in start), name
    teacher, student = _weights(converted_dir, "vqvae"), _weights(out, "vqvae")
    assert torch.equal(teacher["quantize.embedding.weight"], student["quantize.embedding.weight"])
    assert student["decoder.conv_out.weight"].shape[1] == 4 < teacher["decoder.conv_out.weight"].shape[1]
    pipe = ITERPipeline.from_pretrained(out)
    assert pipe.vqvae.config.base_channels == 4 and pipe.encoder.config.blocks_per_stage == 1
    pipe.set_progress_bar_config(disable=True)
    image = pipe(torch.rand(1, 3, 16, 16), generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert image.shape == (1, 3, 64, 64)
    card = (out / "README.md").read_text()
    assert "L1 to the teacher decoder's images of the HQ tokens and of S_l" in card
    assert "distill (trained: vqvae, encoder)" in card


@pytest.mark.parametrize("config, message", [
    (None, "needs the teacher"),
    ({"refiner": {"hidden_dim": 8}}, "must define some of ('vqvae', 'encoder') and nothing else"),
])
def test_distill_stage_refuses_what_it_cannot_distil(converted_dir, photos, tmp_path, config, message):
    extra = []
    if config is not None:
        (tmp_path / "c.json").write_text(json.dumps(config))
        extra = ["--model_config", tmp_path / "c.json"]
    result = launch("--stage", "distill", *common(converted_dir, photos, tmp_path / "out", 1), *extra, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "out").exists()
