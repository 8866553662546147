"""Resuming and EMA for every E_l design and every stage's save/load path: a run resumed from a checkpoint of a
straight run ends where the straight run ends, and the EMA run's pipeline loads and upscales."""

from pathlib import Path

import json

import pytest
import torch
from safetensors.torch import load_file

from iter_diffusers import ITERPipeline, ITERUpsamplingEncoder, ITERVQModel
from test_training import TINY_CONFIG, common, photos, run_main  # noqa: F401 (photos: the fixture)


@pytest.fixture(scope="module")
def upsampling_dir(converted_dir, tmp_path_factory) -> Path:
    """The converted tiny pipeline with an ITERUpsamplingEncoder as E_l (and the converted card: its licence)."""
    pipe = ITERPipeline.from_pretrained(converted_dir)
    pipe.register_modules(encoder=ITERUpsamplingEncoder.from_vqgan(pipe.vqvae, pipe.upscale_factor))
    folder = tmp_path_factory.mktemp("upsampling") / "pipeline"
    pipe.save_pretrained(folder)
    (folder / "README.md").write_bytes((Path(converted_dir) / "README.md").read_bytes())
    return folder


def _max_difference(a: Path, b: Path, name: str) -> float:
    first, second = (load_file(folder / name / "diffusion_pytorch_model.safetensors") for folder in (a, b))
    assert first.keys() == second.keys(), name
    return max((first[k].float() - second[k].float()).abs().max().item() for k in first)


CASES = {
    # the case: E_l replaced by an upsampling encoder started from the VQGAN, all three LQ networks trained
    "lq-encoder_from_vqgan": (["--stage", "lq", "--encoder_from_vqgan"], ("encoder", "evaluator", "refiner")),
    # the VQGAN's decoder on the upsampling E_l's tokens, with the GAN (its discriminator is checkpointed too)
    "lq-decoder-gan": (["--stage", "lq", "--train_components", "decoder", "--lq_gan"], ("vqvae",)),
    # the vqgan stage's decoder-only fine-tune of a pipeline with the upsampling E_l, with the GAN
    "vqgan-decoder_only-gan": (["--stage", "vqgan", "--vqgan_decoder_only", "--gan_weight", "0.1"], ("vqvae",)),
}


@pytest.mark.parametrize("case", CASES)
def test_resumed_ema_run_equals_the_straight_run_and_its_pipeline_upscales(converted_dir, upsampling_dir, photos,
                                                                           tmp_path, case):
    """Straight: 2 steps with --use_ema, a checkpoint after each. Resumed: from the straight run's checkpoint-1 into
    a new folder, to step 2. Their saved (EMA) weights agree to 1e-5, and the pipeline loads and runs."""
    extra, trained = CASES[case]
    start = converted_dir if case == "lq-encoder_from_vqgan" else upsampling_dir
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    small_discriminator = tmp_path / "discriminator.json"  # the default D would take most of the test's time
    small_discriminator.write_text(json.dumps({"discriminator": json.loads(TINY_CONFIG.read_text())["discriminator"]}))

    def run(out, *more):
        args = common(start, photos, out, 2)
        args[args.index("--checkpointing_steps") + 1] = 1
        run_main(*extra, *args, "--use_ema", "--num_validation_images", 0,
                 "--model_config", small_discriminator, *more)

    run(straight)
    run(resumed, "--resume_from_checkpoint", straight / "checkpoint-1")
    # it did resume: the resumed run began after step 1 (no checkpoint-1 of its own)
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (straight / "checkpoint-1" / f"{trained[0]}_ema").is_dir()
    for name in trained:
        assert _max_difference(straight, resumed, name) <= 1e-5, name
    assert _max_difference(Path(start), straight, trained[-1]) > 0, "nothing was trained"
    pipe = ITERPipeline.from_pretrained(resumed)
    assert isinstance(pipe.encoder, ITERUpsamplingEncoder) and isinstance(pipe.vqvae, ITERVQModel)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(torch.rand(1, 3, 16, 16), generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
