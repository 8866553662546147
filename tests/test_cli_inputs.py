"""``iter-sr``'s one-line messages for a --model that is not a model and for image files it cannot read: a file
given as --model, a path that does not exist, an empty image file, a decompression bomb (a huge header)."""

from __future__ import annotations

import contextlib
import gc
import io
import warnings

import PIL.Image
import pytest

from iter_diffusers.cli.upscale import MODEL_CHOICES, main


def _run(argv) -> tuple[int, list[str], str]:
    """main(argv) in-process: the exit status, the error lines and all of stderr; any Python warning fails."""
    err = io.StringIO()
    gc.collect()  # objects left by earlier tests (an event loop, say) warn when collected: not during this run
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main([str(a) for a in argv])
    assert not caught, [str(w.message) for w in caught]
    return rc, [line for line in err.getvalue().splitlines() if line.startswith("iter-sr: error:")], err.getvalue()


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "a.png"
    PIL.Image.new("RGB", (16, 20), "gray").save(path)
    return path


def test_a_file_as_model_says_it_is_a_file_and_what_model_takes(image, tmp_path):
    config = tmp_path / "configs" / "iter_x4_tiny.json"
    config.parent.mkdir()
    config.write_text("{}")
    rc, (line,), _ = _run(["-i", image, "-o", tmp_path / "out", "--model", config])
    assert rc == 2 and line == f"iter-sr: error: --model {config}: a file, not a model; {MODEL_CHOICES}"
    assert "Hub" not in line.removesuffix(MODEL_CHOICES)


@pytest.mark.parametrize("model", ["configs/missing.json", "./missing", "missing.safetensors", "a/b/c"])
def test_a_missing_path_is_no_such_file_or_folder_not_a_hub_lookup(image, tmp_path, model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, (line,), _ = _run(["-i", image, "-o", tmp_path / "out", "--model", model])
    assert rc == 2 and line == f"iter-sr: error: --model {model}: no such file or folder; {MODEL_CHOICES}"


def test_an_empty_image_file_says_so(image, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    rc, (line,), _ = _run(["-i", tmp_path / "empty.png", "-o", tmp_path / "out"])
    assert rc == 1 and line == f"iter-sr: error: {tmp_path / 'empty.png'}: empty file (0 bytes)"


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A 12000x12000 1-bit PNG: 144 MP in its header, about 18 KB on disk."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    PIL.Image.new("1", (12000, 12000)).save(path)
    return path


def test_a_decompression_bomb_is_one_line_with_the_size_the_limit_and_the_option(bomb, tmp_path):
    limit = PIL.Image.MAX_IMAGE_PIXELS
    rc, (line,), err = _run(["-i", bomb, "-o", tmp_path / "out"])
    assert rc == 1 and "DecompressionBomb" not in err and err.count("\n") == 1
    assert line == (f"iter-sr: error: {bomb}: 12000x12000 pixels (144,000,000) is over the limit of {limit:,} "
                    "pixels (a guard against decompression bombs); pass --max_pixels 144000000 or 0 (no limit) to "
                    "read it")
    assert PIL.Image.MAX_IMAGE_PIXELS == limit  # Pillow's own guard is back for everyone else


def test_max_pixels_sets_the_limit(image, tmp_path, converted_dir):
    common = ["-i", image, "-o", tmp_path / "out", "--model", converted_dir, "--steps", "1", "-q"]
    rc, (line,), _ = _run([*common, "--max_pixels", "319"])
    assert rc == 1 and "16x20 pixels (320) is over the limit of 319 pixels" in line
    assert _run([*common, "--max_pixels", "0"])[:2] == (0, [])


def test_a_readers_warning_is_one_line_of_ours(tmp_path, converted_dir):
    """Pillow warns about a corrupt EXIF block (here: 10 of its 12 bytes) while the image itself reads fine."""
    exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\x00\x01"
    PIL.Image.new("RGB", (16, 20), "gray").save(tmp_path / "exif.jpg", exif=exif)
    rc, errors, err = _run(["-i", tmp_path / "exif.jpg", "-o", tmp_path / "out", "--model", converted_dir,
                            "--steps", "1", "-q"])
    assert rc == 0 and errors == []
    assert err == f"iter-sr: warning: {tmp_path / 'exif.jpg'}: Corrupt EXIF data. Expecting to read 12 bytes but " \
                  "only got 10.\n"
