"""The bundled demo model (src/iter_diffusers/pretrained/iter-demo-x4) and the README's first command."""

from pathlib import Path

import numpy as np
import PIL.Image
import torch

from iter_diffusers import ITERPipeline
from iter_diffusers.cli.upscale import DEFAULT_MODEL, main as iter_sr

SAMPLE = Path(__file__).parents[1] / "examples" / "images" / "chelsea_lq.png"


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
    # A trained model, not noise: the output's luminance follows the input's (0.70 measured; random weights ~0).
    bicubic = np.asarray(lq.convert("RGB").resize((lq.width * 4, lq.height * 4), PIL.Image.BICUBIC)) / 255.0
    assert np.corrcoef(out.mean(2).ravel(), bicubic.mean(2).ravel())[0, 1] > 0.5


def test_readme_first_command(tmp_path, capsys):
    assert iter_sr(["-i", str(SAMPLE), "-o", str(tmp_path), "--quiet"]) == 0
    written = PIL.Image.open(tmp_path / "chelsea_lq_x4.png")
    assert written.size == (400, 300)
