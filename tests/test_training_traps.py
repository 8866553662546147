"""Training traps: an lq stage on a random VQGAN, a validation hold-out that eats a small folder, a --help whose
example lost its line breaks, and the README's CPU example (folder of photos -> pipeline -> iter-sr)."""

import json
import os
import re
import subprocess
from pathlib import Path

import PIL.Image
import pytest

from test_training import ROOT, TINY_CONFIG, _train_script, common, run_main

README = ROOT / "README.md"
EXAMPLE_MARKER = "<!-- cpu-training-example -->"


@pytest.fixture(scope="module")
def six_photos(tmp_path_factory) -> Path:
    """Six small photos (scikit-image's CC0 data, 96 px): a small folder, as a first try would have."""
    import skimage.data

    folder = tmp_path_factory.mktemp("six")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat"):
        image = PIL.Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        image.resize((96, 96), PIL.Image.BICUBIC).save(folder / f"{name}.png")
    return folder


def test_lq_stage_from_a_config_alone_is_refused(six_photos, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_main("--stage", "lq", "--model_config", TINY_CONFIG, "--train_data_dir", six_photos,
                 "--output_dir", tmp_path / "out")
    message = capsys.readouterr().err
    assert "--stage lq trains on a frozen, trained VQGAN" in message and "run --stage vqgan first" in message
    assert not (tmp_path / "out").exists()


def test_lq_stage_refuses_a_new_vqgan_in_the_model_config(converted_dir, six_photos, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(TINY_CONFIG.read_text())  # defines a fresh, untrained vqvae next to the starting pipeline's
    with pytest.raises(SystemExit, match="--model_config must not define a new 'vqvae': --stage lq needs the trained"):
        run_main("--stage", "lq", *common(converted_dir, six_photos, tmp_path / "out", 1), "--model_config", config)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("held_out, warned", [(None, True), (1, False), (0, False)], ids=["default-4", "1", "0"])
def test_a_large_validation_share_of_a_small_folder_is_warned_once(converted_dir, six_photos, tmp_path, caplog,
                                                                   held_out, warned):
    """The default hold-out (4) takes 4 of 6 photos: one warning naming the option; 1 of 6 (17 %) or 0: none."""
    from accelerate import Accelerator

    script = _train_script()
    args = common(converted_dir, six_photos, tmp_path, 1)
    del args[args.index("--num_validation_images"):args.index("--num_validation_images") + 2]
    more = [] if held_out is None else ["--num_validation_images", str(held_out)]
    parsed = script.parse_args(["--stage", "lq", *map(str, args), *more])
    train, validation = script.make_datasets(parsed, Accelerator(cpu=True), 4, script.degradation_config(parsed))
    assert len(train) + len(validation) == 6
    warnings = [r.getMessage() for r in caplog.records if "holds out" in r.getMessage()]
    if warned:
        assert len(validation) == 4 and len(warnings) == 1
        assert "4 of the 6 training images (67%)" in warnings[0] and "--num_validation_images" in warnings[0]
    else:
        assert warnings == []


def test_help_keeps_the_example_line_breaks(capsys):
    script = _train_script()
    with pytest.raises(SystemExit):
        script.parse_args(["--help"])
    lines = capsys.readouterr().out.splitlines()
    launches = [i for i, line in enumerate(lines) if "accelerate launch" in line]
    documented = (script.__doc__ or "").count("accelerate launch")
    assert documented >= 2 and len(launches) == documented, lines[:12]
    for i in launches:  # each launch continues on the next line, as in the docstring
        assert lines[i].endswith(" \\") and lines[i + 1].lstrip().startswith("--"), lines[i:i + 2]


def cpu_example() -> str:
    """The fenced bash block that follows the README's ``<!-- cpu-training-example -->`` line."""
    text = README.read_text(encoding="utf-8")
    found = re.search(re.escape(EXAMPLE_MARKER) + r"\s*\n```bash\n(.*?)\n```", text, re.DOTALL)
    assert found, f"README.md has no ```bash block right after {EXAMPLE_MARKER}"
    return found.group(1)


def test_the_readme_cpu_example_runs_from_photos_to_an_upscaled_image(six_photos, tmp_path):
    """The README's CPU training example, as written, on tiny settings that it reads from the environment: a VQGAN
    from scratch, the lq stage from it, and iter-sr with the resulting pipeline."""
    out = tmp_path / "runs"
    env = {**os.environ, "IMAGES": str(six_photos), "OUT": str(out), "VQGAN_STEPS": "2", "LQ_STEPS": "2"}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", cpu_example()], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted(out.rglob("training_summary.json"))
    assert len(summaries) == 2 and all(json.loads(p.read_text())["steps"] == 2 for p in summaries)
    outputs = [p for p in out.rglob("*.png") if "validation" not in p.name and "validation" not in p.parts]
    assert len(outputs) == 1, outputs
    source = next(p for p in (ROOT / "examples" / "images").glob("*.png") if outputs[0].name.startswith(p.stem))
    width, height = PIL.Image.open(source).size
    assert PIL.Image.open(outputs[0]).size == (4 * width, 4 * height)
