"""Folders the project writes load with plain diffusers (``trust_remote_code=True``), in an environment that has
torch and diffusers but not this package, and give the package's image."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import seeded
from iter_diffusers import ITERPipeline
from iter_diffusers.pipelines.hub_code import HUB_MODULES

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "examples" / "train_iter.py"
STEPS = 4

#: Run in the package-less environment: load the folder as a diffusers user does and write its image.
PLAIN_LOAD = textwrap.dedent("""
    import sys, torch
    from diffusers import DiffusionPipeline
    try:
        import iter_diffusers
        sys.exit("iter_diffusers is importable here: the environment is not package-less")
    except ImportError:
        pass
    folder, inputs, out = sys.argv[1:4]
    try:
        DiffusionPipeline.from_pretrained(folder)
        sys.exit("loaded without trust_remote_code")
    except ValueError as error:
        print("REFUSED:", " ".join(str(error).split()))
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    x = torch.load(inputs, weights_only=True)
    image = pipe(x, generator=torch.Generator().manual_seed(123), num_inference_steps=%d, output_type="pt").images
    torch.save({"image": image, "class": type(pipe).__module__ + "." + type(pipe).__name__}, out)
    pipe.to("cpu", torch.bfloat16)  # diffusers' empty keep-in-fp32 warning must not reach plain users either
""" % STEPS)


@pytest.fixture(scope="module")
def plain_python(tmp_path_factory) -> Path:
    """A venv that sees this interpreter's site-packages (torch, diffusers) through a plain path entry: the
    ``.pth`` files there, among them the editable install of iter_diffusers, are not processed, so the package
    is not importable."""
    venv = tmp_path_factory.mktemp("plain-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "outer_site_packages.pth").write_text("\n".join(sorted(paths)) + "\n")
    return python


def _plain_image(python: Path, folder: Path, x: torch.Tensor, tmp_path: Path) -> dict:
    (tmp_path / "inputs.pt").unlink(missing_ok=True)
    torch.save(x, tmp_path / "inputs.pt")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(python), "-c", PLAIN_LOAD, str(folder), str(tmp_path / "inputs.pt"),
                             str(tmp_path / "out.pt")], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REFUSED:" in result.stdout and "trust_remote_code" in result.stdout  # diffusers' own refusal
    assert "kept in float32" not in result.stderr
    return torch.load(tmp_path / "out.pt", weights_only=True)


def _package_image(folder: Path, x: torch.Tensor) -> torch.Tensor:
    pipe = ITERPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe(x, generator=seeded(123), num_inference_steps=STEPS, output_type="pt").images


def _check_plain_load(python, folder: Path, tmp_path: Path):
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["iter_diffusers_pipeline", "ITERPipeline"]
    assert all((folder / f"{module}.py").is_file() for module in HUB_MODULES)
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    plain = _plain_image(python, folder, x, tmp_path)
    assert plain["class"].startswith("diffusers_modules.") and plain["class"].endswith(".ITERPipeline")
    assert (plain["image"] - _package_image(folder, x)).abs().max() <= 1e-4


def test_converted_folder_loads_with_plain_diffusers(plain_python, converted_dir, tmp_path):
    """scripts/convert_weights.py and the official-weights cache write through convert_and_save."""
    _check_plain_load(plain_python, converted_dir, tmp_path)
    card = (converted_dir / "README.md").read_text()  # the card shows the plain-diffusers snippet
    assert 'DiffusionPipeline.from_pretrained("PATH_TO_THIS_FOLDER", trust_remote_code=True)' in card


def test_saved_and_resaved_folders_load_with_plain_diffusers(plain_python, pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    _check_plain_load(plain_python, tmp_path / "saved", tmp_path)
    # a pipeline loaded by plain diffusers saves a folder that carries the same code
    script = ("import sys; from diffusers import DiffusionPipeline; "
              "DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True).save_pretrained(sys.argv[2])")
    subprocess.run([str(plain_python), "-c", script, str(tmp_path / "saved"), str(tmp_path / "resaved")],
                   check=True, capture_output=True, cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    for module in HUB_MODULES:
        assert (tmp_path / "resaved" / f"{module}.py").read_text() == (tmp_path / "saved" / f"{module}.py").read_text()
    _check_plain_load(plain_python, tmp_path / "resaved", tmp_path)


def test_training_output_loads_with_plain_diffusers(plain_python, converted_dir, tmp_path):
    import skimage.data
    import PIL.Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        PIL.Image.fromarray(getattr(skimage.data, name)()).save(photos / f"{name}.png")
    out = tmp_path / "run"
    command = [sys.executable, str(SCRIPT), "--stage", "lq", "--pretrained_model_name_or_path", str(converted_dir),
               "--train_data_dir", str(photos), "--resolution", "64", "--train_batch_size", "1",
               "--max_train_steps", "1", "--output_dir", str(out), "--seed", "0", "--perceptual_weight", "0",
               "--validation_steps", "1000", "--num_validation_images", "1", "--report_to", "none"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_plain_load(plain_python, out, tmp_path)
    assert "trust_remote_code=True" in (out / "README.md").read_text()


def test_the_bundled_model_loads_with_plain_diffusers(plain_python, tmp_path):
    """The bundled model (the upsampling E_l design) carries its code too."""
    from iter_diffusers import DEMO_MODEL_PATH

    _check_plain_load(plain_python, DEMO_MODEL_PATH, tmp_path)


def test_the_bundled_model_carries_the_current_code():
    from iter_diffusers import DEMO_MODEL_PATH
    from iter_diffusers.hub_code_builder import build_hub_code

    stale = [name for name, text in build_hub_code().items()
             if (DEMO_MODEL_PATH / name).read_text(encoding="utf-8") != text]
    assert not stale, (f"{stale} in the bundled model are not this package's code: run "
                       "python scripts/refresh_folder_code.py src/iter_diffusers/pretrained/iter-demo-x4")
    for component in ("vqvae", "encoder", "evaluator", "refiner", "scheduler"):
        (code,) = (DEMO_MODEL_PATH / component).glob("iter_diffusers_*.py")
        assert code.read_text(encoding="utf-8") == (DEMO_MODEL_PATH / code.name).read_text(encoding="utf-8")


def test_pushes_carry_the_code(converted_dir):
    from iter_diffusers.conversion import pipeline_files

    files = pipeline_files(converted_dir)
    assert {f"{module}.py" for module in HUB_MODULES} <= set(files)
    assert "vqvae/iter_diffusers_models.py" in files and "scheduler/iter_diffusers_scheduler.py" in files


def test_package_loading_never_runs_a_folders_code(pipe, tmp_path):
    """ITERPipeline.from_pretrained reads a code-carrying folder with the package's classes: a folder whose code
    would fail on import still loads."""
    pipe.save_pretrained(tmp_path / "saved")
    for path in (tmp_path / "saved").rglob("iter_diffusers_*.py"):
        path.write_text("raise RuntimeError('the folder code ran')\n")
    loaded = ITERPipeline.from_pretrained(tmp_path / "saved")
    assert type(loaded.vqvae) is type(pipe.vqvae) and type(loaded) is ITERPipeline


def test_folders_written_before_keep_loading(pipe, tmp_path):
    """A folder in the earlier layout (package entries, no code files) loads with ITERPipeline as before."""
    folder = tmp_path / "old"
    pipe.save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "ITERPipeline"
    for name, component in pipe.components.items():
        index[name] = [type(component).__module__, type(component).__name__]
    (folder / "model_index.json").write_text(json.dumps(index))
    for path in folder.rglob("iter_diffusers_*.py"):
        path.unlink()
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_package_image(folder, x),
                       pipe(x, generator=seeded(123), num_inference_steps=STEPS, output_type="pt").images)
