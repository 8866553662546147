"""The bundled demo model (src/iter_diffusers/pretrained/iter-demo-x4) and the README's first command."""

import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from iter_diffusers import ITERPipeline
from iter_diffusers.cli.upscale import DEFAULT_MODEL, main as iter_sr
from iter_diffusers.evaluation.sr_benchmark import bicubic, make_pair, score, to_u8
from iter_diffusers.pipelines.hub_code import HUB_MODELS_MODULE

SAMPLE = Path(__file__).parents[1] / "examples" / "images" / "chelsea_lq.png"
SCRIPTS = Path(__file__).parents[1] / "scripts"


def test_bundled_model_is_complete_and_small():
    files = [p for p in DEFAULT_MODEL.rglob("*") if p.is_file()]
    names = {p.relative_to(DEFAULT_MODEL).as_posix() for p in files}
    for component in ("vqvae", "encoder", "evaluator", "refiner"):
        assert f"{component}/diffusion_pytorch_model.safetensors" in names
        assert f"{component}/config.json" in names
    assert {"model_index.json", "scheduler/scheduler_config.json", "README.md"} <= names
    assert sum(p.stat().st_size for p in files) <= 50 * 2**20


def test_bundled_model_upscales_the_sample_x4():
    pipe = ITERPipeline.from_pretrained(DEFAULT_MODEL)
    pipe.set_progress_bar_config(disable=True)
    lq = PIL.Image.open(SAMPLE)
    out = pipe(lq, generator=torch.Generator().manual_seed(123), output_type="np").images[0]
    assert out.shape == (lq.height * 4, lq.width * 4, 3)
    assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


def test_bundled_model_serves_on_a_held_out_photo():
    """The README's promise for the default settings: scikit-image's ``coffee`` (in the demo data set's held-out
    split, never trained or tuned on), degraded by the held-out chain (not the training one), comes back as
    faithful as bicubic within 1.5 dB PSNR / 0.05 SSIM, with the same colours (measured with the distilled model:
    +0.18 dB, +0.006), and sharper, without speckle (measured: edge sharpness 0.237 against bicubic's 0.190; flat
    noise 0.57 against bicubic's 0.66; the HQ photo's own grain is 1.38)."""
    from skimage import data

    lq, hq = make_pair(load_hq_array(data.coffee()), 4, "heldout", seed=0)
    pipe = ITERPipeline.from_pretrained(DEFAULT_MODEL)
    pipe.set_progress_bar_config(disable=True)
    ours = to_u8(pipe(lq, generator=torch.Generator().manual_seed(123), output_type="np").images[0])
    ours_scores, bicubic_scores = score(ours, hq, 4), score(bicubic(lq, 4), hq, 4)
    assert ours_scores["psnr"] >= bicubic_scores["psnr"] - 1.5
    assert ours_scores["ssim"] >= bicubic_scores["ssim"] - 0.05
    assert ours_scores["color_error"] <= 3 and ours_scores["local_color_error"] <= 6
    # sharper than bicubic on the photo's edges, and no speckle: flat regions no noisier than bicubic's
    assert ours_scores["edge_sharpness"] >= 1.2 * bicubic_scores["edge_sharpness"]
    assert ours_scores["flat_noise"] <= bicubic_scores["flat_noise"]
    # and ITER is really at work: without the colour fix its own rendering differs from bicubic's
    raw = to_u8(pipe(lq, generator=torch.Generator().manual_seed(123), output_type="np", color_fix="none").images[0])
    assert np.abs(raw.astype(int) - bicubic(lq, 4)).mean() > 5


def load_hq_array(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[: image.shape[0] // 4 * 4, : image.shape[1] // 4 * 4, :3])


def test_readme_first_command(tmp_path, capsys):
    assert iter_sr(["-i", str(SAMPLE), "-o", str(tmp_path), "--quiet"]) == 0
    written = PIL.Image.open(tmp_path / "chelsea_lq_x4.png")
    assert written.size == (400, 300)


def _run_script(name: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", [name, *argv])
    runpy.run_path(str(SCRIPTS / name), run_name="__main__")


STAGE_STEPS = (("vqgan", 100), ("encoder", 200), ("lq", 300), ("encoder_gan", 100), ("decoder_gan", 100),
               ("distill", 200))


def _card_records(tmp_path: Path, stages) -> dict:
    """Made-up training records of ``stages`` and a data set, and the writer's arguments for them."""
    for stage, steps in stages:
        (tmp_path / "run" / stage).mkdir(parents=True)
        summary = {"steps": steps, "seconds_per_step": 0.6, "first": {"loss": 2.0}, "last": {"loss": 1.0},
                   "validation": {"val/psnr": 21.234}}
        (tmp_path / "run" / stage / "training_summary.json").write_text(json.dumps(summary))
        stage_card = f"# card\n\n## Training\n\n- stage: {stage}\n- steps: {steps} × batch 8\n- losses: L1 {stage}\n\n## Results\n"
        (tmp_path / "run" / stage / "README.md").write_text(stage_card)
    for split, rows in (("train", [("opencv", "Apache-2.0 AND BSD-3-Clause (OpenCV)")] * 3),
                        ("val", [("kodak", "Kodak: unrestricted use")])):
        (tmp_path / "data" / split).mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"file_name": f"{i}.png", "source": s, "licence": lic}) for i, (s, lic) in enumerate(rows)]
        (tmp_path / "data" / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "eval.json").write_text(json.dumps({"table": CARD_TABLE}))
    return ["--run", str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--eval", str(tmp_path / "eval.json")]


CARD_TABLE = "| set | method | PSNR (Y) ↑ |\n|---|---|---|\n| held-out | bicubic | 23.92 |"


def test_demo_model_card_is_written_from_the_records(converted_dir, tmp_path, monkeypatch):
    """scripts/write_demo_model_card.py: data, the six stages, time, the measured table and the licence, all read
    from what training and evaluation wrote (here: made-up records on the tiny converted pipeline)."""
    model = tmp_path / "model"
    shutil.copytree(converted_dir, model)
    _run_script("write_demo_model_card.py", ["--model", str(model), *_card_records(tmp_path, STAGE_STEPS)],
                monkeypatch)
    card = (model / "README.md").read_text()
    assert "license: apache-2.0" in card and CARD_TABLE in card
    assert "3 training photos (3 opencv), 1 held out (1 kodak)" in card
    for stage, steps in STAGE_STEPS:
        assert f"steps {steps} × batch 8; losses L1 {stage}; 0.60 s/step ({steps * 0.6 / 60:.0f} min)" in card
    assert "stage: lq" not in card
    assert "total training time: 10 min" in card
    assert "Apache-2.0 AND BSD-3-Clause; Kodak: unrestricted use" in card
    assert "psnr 21.2" in card
    widths = "/".join(map(str, _widths(model)))
    assert f"widths {widths} from the output resolution" in card.replace("\n", " ")


def _widths(model: Path) -> list[int]:
    config = json.loads((model / "vqvae" / "config.json").read_text())
    return [config["base_channels"] * m for m in config["channel_multipliers"]]


def test_demo_model_card_keeps_the_earlier_records_of_stages_not_run_again(converted_dir, tmp_path, monkeypatch):
    """Stage VI run again alone: stages I–V keep their records (and minutes) from the model's earlier card; a stage
    found in neither place stops the writer before it writes anything."""
    model = tmp_path / "model"
    shutil.copytree(converted_dir, model)
    first = tmp_path / "first"
    _run_script("write_demo_model_card.py", ["--model", str(model), *_card_records(first, STAGE_STEPS)], monkeypatch)
    previous = tmp_path / "previous_card.md"
    shutil.copy(model / "README.md", previous)
    (model / "README.md").unlink()
    again = tmp_path / "again"
    arguments = ["--model", str(model), *_card_records(again, [("distill", 1000)])]
    with pytest.raises(SystemExit, match="no record of stage I .*no --previous_card lists it"):
        _run_script("write_demo_model_card.py", arguments, monkeypatch)
    assert not (model / "README.md").exists()
    _run_script("write_demo_model_card.py", [*arguments, "--previous_card", str(previous)], monkeypatch)
    card = (model / "README.md").read_text()
    for stage, steps in STAGE_STEPS[:-1]:
        assert f"steps {steps} × batch 8; losses L1 {stage}; 0.60 s/step" in card
    assert "steps 1000 × batch 8; losses L1 distill; 0.60 s/step (10 min)" in card
    assert "total training time: 18 min" in card  # 8 min of stages I–V and 10 of the new stage VI


def test_the_vqgan_bound_renders_the_photos_own_tokens(converted_dir):
    """``evaluate_demo_model.py --vqgan_bounds``: the row vqgan_hq is the decoder's picture of the tokens the VQGAN
    gives the photo itself, the ceiling of any E_l, φ_e and φ_r on that codebook."""
    namespace = runpy.run_path(str(SCRIPTS / "evaluate_demo_model.py"))
    pipe = ITERPipeline.from_pretrained(converted_dir)
    side = pipe.vqvae.scale_factor * pipe.token_window  # whole windows of tokens: no padding
    photo = np.random.default_rng(0).integers(0, 256, (side, 2 * side, 3), dtype=np.uint8)
    bound = namespace["vqgan_reconstruction"](pipe, photo)
    with torch.no_grad():
        tokens = pipe.vqvae.encode_to_indices(namespace["as_tensor"](photo))
        expected = to_u8(pipe.vqvae.decode(tokens).sample[0].permute(1, 2, 0).numpy())
    odd = namespace["vqgan_reconstruction"](pipe, photo[: side - 3, : side + 5])  # padded, then cropped back
    assert odd.shape == (side - 3, side + 5, 3)
    assert bound.shape == photo.shape and bound.dtype == np.uint8
    assert np.abs(bound.astype(int) - expected.astype(int)).max() <= 1  # rounding at an 8-bit level boundary
    assert np.abs(bound.astype(int) - photo.astype(int)).mean() > 1  # a rendering, not the photo passed through


def test_comparison_strip_aligns_the_crops():
    comparison_strip = runpy.run_path(str(SCRIPTS / "evaluate_demo_model.py"))["comparison_strip"]
    hq = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    panels = {"lq": hq[::4, ::4], "bicubic": hq // 2, "iter": 255 - hq, "hq": hq}
    strip = np.asarray(comparison_strip(panels, 4, side=32, gap=2))
    assert strip.shape == (32, 4 * 32 + 3 * 2, 3)
    crop = (slice(32, 64), slice(48, 80))  # centre, on the LQ grid
    assert np.array_equal(strip[:, 34:66], panels["bicubic"][crop])
    assert np.array_equal(strip[:, 68:100], panels["iter"][crop])
    assert np.array_equal(strip[:, 102:134], hq[crop])
    assert np.array_equal(strip[::4, 0:32:4], hq[crop][::4, ::4])  # LQ pixels, nearest-neighbour ×4


def test_set_pipeline_defaults_updates_a_folder_in_place(converted_dir, tmp_path, monkeypatch, capsys):
    model = tmp_path / "model"
    shutil.copytree(converted_dir, model)
    with pytest.raises(SystemExit) as exit_:
        _run_script("set_pipeline_defaults.py", [str(model), "--color_fix", "wavelet", "--color_fix_levels", "3",
                                                 "--token_temperature", "0.5"], monkeypatch)
    assert exit_.value.code == 0
    pipe = ITERPipeline.from_pretrained(model)
    assert (pipe.config.color_fix, pipe.config.color_fix_levels) == ("wavelet", 3)
    assert pipe.scheduler.config.token_temperature == 0.5 and pipe.scheduler.config.mask_threshold == 0.7
    index = json.loads((model / "model_index.json").read_text())
    assert "_name_or_path" not in index and index["vqvae"] == [HUB_MODELS_MODULE, "ITERVQModel"]
    before = (model / "model_index.json").read_text()
    with pytest.raises(SystemExit) as exit_:
        _run_script("set_pipeline_defaults.py", [str(model), "--color_fix_levels", "0"], monkeypatch)
    assert exit_.value.code == 2
    assert "color_fix_levels must be a positive int" in capsys.readouterr().err
    assert (model / "model_index.json").read_text() == before  # a refused setting changes nothing
