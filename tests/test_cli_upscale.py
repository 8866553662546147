"""Tests of the ``iter-sr`` command line tool (``iter_diffusers.cli.upscale``), on the tiny converted x4 pipeline.

Most tests call ``main([...])`` in-process; one runs ``python -m iter_diffusers.cli.upscale`` as a subprocess.
The model is run on 16x20 images with 2 refinement steps to keep the file fast.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest

from iter_diffusers.cli import upscale
from iter_diffusers.cli.arguments import parse_tile
from iter_diffusers.cli.console import UsageError
from iter_diffusers.cli.images import atomic_save, compose_output, load_image
from iter_diffusers.cli.inputs import InputFile, collect_inputs, output_extension, plan_jobs, shard
from iter_diffusers.cli.upscale import main

H, W, S = 16, 20, 4
FAST = ["--steps", "2"]


def _run(argv):
    """main(argv) in-process with stdout / stderr captured (usable from module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def _error_lines(err: str):
    return [line for line in err.splitlines() if line.startswith("iter-sr: error:")]


def _rgb(seed: int, shape=(H, W, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _write_inputs(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(_rgb(0)).save(folder / "rgb.png")
    PIL.Image.fromarray(_rgb(1)).save(folder / "photo.jpg", quality=95)
    PIL.Image.fromarray(_rgb(2, (H, W, 4)), mode="RGBA").save(folder / "rgba.png")
    PIL.Image.fromarray(_rgb(3, (H, W)), mode="L").save(folder / "gray.png")
    ramp = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)  # needs all 16 bits
    PIL.Image.fromarray(ramp).save(folder / "gray16.png")
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display -> displayed W x H = 16 x 20
    PIL.Image.fromarray(_rgb(4)).save(folder / "exif.jpg", exif=exif.tobytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, converted_dir):
    """One run over a folder of every kind of input (and one corrupt file)."""
    root = tmp_path_factory.mktemp("cli")
    _write_inputs(root / "in")
    rc, out, err = _run(["-i", root / "in", "-o", root / "out", "--model", converted_dir, *FAST])
    return SimpleNamespace(rc=rc, out=out, err=err, inputs=root / "in", outputs=root / "out", model=converted_dir)


def _open(path: Path) -> PIL.Image.Image:
    with PIL.Image.open(path) as image:
        image.load()
        return image


# ------------------------------------------------------------------------------------------- one folder run
def test_folder_with_a_corrupt_file(folder_run):
    assert folder_run.rc == 1  # one failure
    errors = _error_lines(folder_run.err)
    assert len(errors) == 1
    assert errors[0].startswith(f"iter-sr: error: {folder_run.inputs / 'broken.png'}: ")
    assert "Traceback" not in folder_run.err
    written = sorted(p.name for p in folder_run.outputs.iterdir())
    expected = sorted(f"{n}_x4.png" for n in ("exif", "gray", "gray16", "photo", "rgb", "rgba"))
    assert written == expected  # and no temporary files left
    assert "6 written, 0 skipped (existing), 1 failed" in folder_run.out


def test_png_and_jpeg_inputs(folder_run):
    for name in ("rgb", "photo"):
        image = _open(folder_run.outputs / f"{name}_x4.png")
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (W * S, H * S)


def test_rgba_keeps_an_upscaled_alpha(folder_run):
    image = _open(folder_run.outputs / "rgba_x4.png")
    assert image.mode == "RGBA" and image.size == (W * S, H * S)
    source_alpha = _open(folder_run.inputs / "rgba.png").getchannel("A")
    expected = source_alpha.resize((W * S, H * S), PIL.Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(np.asarray(image.getchannel("A")), np.asarray(expected))


def test_grayscale_stays_grayscale(folder_run):
    image = _open(folder_run.outputs / "gray_x4.png")
    assert image.mode == "L" and image.size == (W * S, H * S)


def test_16bit_png_read_and_written_at_16_bits(folder_run):
    loaded = load_image(folder_run.inputs / "gray16.png")
    ramp = np.asarray(_open(folder_run.inputs / "gray16.png")).astype(np.float32) / 65535.0
    assert loaded.bit_depth == 16 and loaded.grayscale
    np.testing.assert_array_equal(loaded.rgb[..., 0], ramp)  # full precision, not 8-bit
    image = _open(folder_run.outputs / "gray16_x4.png")
    assert image.mode == "I;16" and image.size == (W * S, H * S)
    values = np.asarray(image)
    assert values.dtype == np.uint16
    assert np.any(values % 257 != 0)  # not an 8-bit image stretched to 16 bits


def test_exif_orientation_applied(folder_run):
    assert load_image(folder_run.inputs / "exif.jpg").rgb.shape == (W, H, 3)
    assert _open(folder_run.outputs / "exif_x4.png").size == (H * S, W * S)


def test_same_seed_same_output_whatever_the_order(folder_run, tmp_path):
    # The folder run processed exif, gray, gray16, photo, rgb, rgba in that order; here only two, reversed.
    rc, _, err = _run(["-i", folder_run.inputs / "rgb.png", "-i", folder_run.inputs / "photo.jpg",
                       "-o", tmp_path, "--model", folder_run.model, "--scale", "4", *FAST])
    assert rc == 0, err
    for name in ("rgb", "photo"):
        np.testing.assert_array_equal(
            np.asarray(_open(tmp_path / f"{name}_x4.png")), np.asarray(_open(folder_run.outputs / f"{name}_x4.png"))
        )


# ------------------------------------------------------------------------------------------- other runs
def test_existing_output_skipped_unless_overwrite(folder_run, tmp_path):
    source = folder_run.inputs / "rgb.png"
    target = tmp_path / "rgb_x4.png"
    target.write_bytes(b"old")
    rc, out, _ = _run(["-i", source, "-o", tmp_path, "--model", folder_run.model, *FAST])
    assert rc == 0 and target.read_bytes() == b"old"
    assert "skipping" in out and "--overwrite" in out
    rc, _, err = _run(["-i", source, "-o", tmp_path, "--model", folder_run.model, "--overwrite", "--quiet", *FAST])
    assert rc == 0, err
    assert _open(target).size == (W * S, H * S)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb_x4.png"]


def test_never_overwrites_an_input(folder_run, tmp_path):
    source = tmp_path / "rgb.png"
    source.write_bytes((folder_run.inputs / "rgb.png").read_bytes())
    before = source.read_bytes()
    for extra in ([], ["--overwrite"]):
        rc, _, err = _run(["-i", tmp_path, "-o", tmp_path, "--suffix", "", "--model", folder_run.model, *extra])
        assert rc == 2
        assert "overwrite the input" in _error_lines(err)[0]
    assert source.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgb.png"]


def test_rgba_as_jpeg_drops_alpha_with_a_warning(folder_run, tmp_path):
    rc, _, err = _run(["-i", folder_run.inputs / "rgba.png", "-o", tmp_path, "--model", folder_run.model,
                       "--ext", "jpg", "--suffix", "", *FAST])
    assert rc == 0
    assert "warning" in err and "transparency" in err
    image = _open(tmp_path / "rgba.jpg")
    assert image.format == "JPEG" and image.mode == "RGB" and image.size == (W * S, H * S)


def test_glob_input(folder_run, tmp_path):
    rc, out, err = _run(["-i", str(folder_run.inputs / "ph*.jpg"), "-o", tmp_path, "--model", folder_run.model,
                         "--suffix", "_ITER_x{scale}", *FAST])
    assert rc == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["photo_ITER_x4.png"]
    assert "1 written" in out


def test_no_input_matched(folder_run, tmp_path):
    for pattern in (folder_run.inputs / "*.gif", tmp_path / "missing.png", tmp_path):  # glob, file, empty folder
        rc, _, err = _run(["-i", pattern, "-o", tmp_path / "out", "--model", folder_run.model])
        assert rc == 2
        assert len(_error_lines(err)) == 1
    assert not (tmp_path / "out").exists()


def test_missing_default_model(monkeypatch, folder_run, tmp_path):
    monkeypatch.setattr(upscale, "DEFAULT_MODEL", tmp_path / "pretrained" / "iter-demo-x4")
    rc, _, err = _run(["-i", folder_run.inputs / "rgb.png", "-o", tmp_path / "out"])
    assert rc == 2
    (line,) = _error_lines(err)
    assert "demo model is not installed" in line and "--model" in line


def test_bad_model_path(folder_run, tmp_path):
    rc, _, err = _run(["-i", folder_run.inputs / "rgb.png", "-o", tmp_path, "--model", tmp_path / "nope"])
    assert rc == 2 and "no such file or folder" in _error_lines(err)[0]


def test_scale_mismatch(folder_run, tmp_path):
    rc, _, err = _run(["-i", folder_run.inputs / "rgb.png", "-o", tmp_path / "out", "--model", folder_run.model,
                       "--scale", "2"])
    assert rc == 2
    assert "--scale 2" in _error_lines(err)[0] and "x4" in err
    assert not (tmp_path / "out").exists()


def test_usage_errors_return_2(folder_run, tmp_path):
    base = ["-i", folder_run.inputs / "rgb.png", "-o", tmp_path, "--model", folder_run.model]
    for bad in (["--tile", "big"], ["--steps", "0"], ["--alpha", "1.5"], ["--ext", "gif"]):
        assert _run(base + bad)[0] == 2
    assert _run(["-o", tmp_path])[0] == 2  # no -i


def test_subprocess_run(folder_run, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "iter_diffusers.cli.upscale", "-i", str(folder_run.inputs / "gray.png"),
         "-o", str(tmp_path), "--model", str(folder_run.model), "--steps", "1", "--tile", "8", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # --quiet
    image = _open(tmp_path / "gray_x4.png")
    assert image.mode == "L" and image.size == (W * S, H * S)


# ------------------------------------------------------------------------------------------- pure functions
def test_shard():
    files = [f"f{i}" for i in range(7)]
    shares = [shard(files, i, 3) for i in range(3)]
    assert shares == [["f0", "f3", "f6"], ["f1", "f4"], ["f2", "f5"]]
    assert sorted(sum(shares, [])) == sorted(files)
    assert shard(files, 0, 1) == files
    assert shard(files[:1], 1, 2) == []
    with pytest.raises(ValueError):
        shard(files, 3, 3)


def test_parse_tile():
    assert parse_tile("auto") == "auto"
    assert parse_tile("0") is None and parse_tile("none") is None
    assert parse_tile("256") == 256


def test_output_extension():
    assert output_extension(Path("a.JPEG"), "auto") == "jpeg"
    assert output_extension(Path("a.gif"), "auto") == "png"
    assert output_extension(Path("a.jpg"), "webp") == "webp"


def test_plan_jobs(tmp_path):
    for name in ("a.png", "a.jpg", "b_x4.png"):
        PIL.Image.new("RGB", (4, 4)).save(tmp_path / name)
    with pytest.raises(UsageError, match="both be written"):
        plan_jobs(collect_inputs([str(tmp_path)]), tmp_path / "out", "_x4", "png")
    jobs = plan_jobs(collect_inputs([str(tmp_path)]), tmp_path / "out", "_x4", "auto")
    assert [j.output.name for j in jobs] == ["a_x4.jpg", "a_x4.png", "b_x4_x4.png"]
    # in the output folder itself, an earlier output (b_x4.png) is not taken as an input, unless named explicitly
    jobs = plan_jobs(collect_inputs([str(tmp_path)]), tmp_path, "_x4", "auto")
    assert [j.input.name for j in jobs] == ["a.jpg", "a.png"]
    jobs = plan_jobs([InputFile(tmp_path / "b_x4.png", True)], tmp_path, "_x4", "png")
    assert [j.output.name for j in jobs] == ["b_x4_x4.png"]


def test_atomic_save_cleans_up_on_failure(tmp_path):
    image = PIL.Image.fromarray(np.zeros((4, 4), dtype=np.uint16))  # I;16 cannot be written as JPEG
    with pytest.raises(OSError):
        atomic_save(image, tmp_path / "x.jpg", "JPEG")
    assert list(tmp_path.iterdir()) == []


def test_palette_and_gray_alpha_modes(tmp_path):
    palette = PIL.Image.fromarray(_rgb(5)).convert("P")
    palette.save(tmp_path / "p.png")
    palette.save(tmp_path / "pt.png", transparency=0)
    PIL.Image.fromarray(_rgb(6, (H, W, 2)), mode="LA").save(tmp_path / "la.png")
    assert load_image(tmp_path / "p.png").alpha is None
    loaded = load_image(tmp_path / "pt.png")
    assert loaded.alpha is not None and not loaded.grayscale
    la = load_image(tmp_path / "la.png")
    assert la.grayscale and la.alpha is not None and la.rgb.shape == (H, W, 3)
    sr = np.full((H * S, W * S, 3), 0.5, dtype=np.float32)
    assert compose_output(sr, la, "png")[0].mode == "LA"
    assert compose_output(sr, la, "webp")[0].mode == "RGBA"  # webp has no grayscale mode
    warnings = []
    image, pil_format, _ = compose_output(sr, la, "jpg", warnings.append)
    assert (image.mode, pil_format) == ("L", "JPEG") and "transparency" in warnings[0]


def test_accelerate_sharding_gives_the_same_files_as_one_process(converted_dir, tmp_path):
    """iter-sr over 2 CPU processes (torchrun; on a GPU machine ``accelerate launch --num_processes 2``): each
    process takes its share of the files, and the results are those of a single process (to float rounding)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        PIL.Image.fromarray(rng.integers(0, 256, (12 + index, 10, 3), dtype=np.uint8)).save(inputs / f"{index}.png")
    common = ["-i", str(inputs), "--model", str(converted_dir), "--steps", "2", "--quiet"]
    # One thread in every process: CPU kernels round differently with other thread counts, and a token drawn
    # at a rounding boundary would change the image.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "iter_diffusers.cli.upscale", *common, "-o", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=600, env=env)
    assert single.returncode == 0, single.stderr
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "-m", "iter_diffusers.cli.upscale", *common[:-1], "-o", str(tmp_path / "two")],
                              capture_output=True, text=True, timeout=600, env=env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "3 written, 0 skipped (existing), 0 failed in 2 processes" in launched.stdout + launched.stderr
    one = {p.name: np.asarray(PIL.Image.open(p)).astype(int) for p in (tmp_path / "one").iterdir()}
    two = {p.name: np.asarray(PIL.Image.open(p)).astype(int) for p in (tmp_path / "two").iterdir()}
    assert len(one) == 3 and one.keys() == two.keys()
    for name in one:  # the same tokens; CPU kernels may round a few pixels one level apart across processes
        difference = np.abs(one[name] - two[name])
        assert difference.max() <= 1 and (difference > 0).mean() < 0.001, name
