"""scripts/gpu/pack_photos.py: the photos carried to a device machine are lossless WebP copies of the same pixels,
and training reads them as it reads the PNGs."""

import json
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from conftest import write_imagefolder
from iter_diffusers.training.data import load_image_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts" / "gpu"))
import pack_photos  # noqa: E402


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)  # an RGB photo and a grey one (WebP stores grey as RGB)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), rng.integers(0, 256, (40, 56), dtype=np.uint8)]
    return write_imagefolder(tmp_path / "photos", images, licence="CC0-1.0")


def test_copies_hold_the_same_pixels_and_the_metadata_names_them(photos, tmp_path):
    out = tmp_path / "packed"
    pack_photos.pack(photos, out)
    entries = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [e["file_name"] for e in entries] == ["p0.webp", "p1.webp"]
    assert all(e["licence"] == "CC0-1.0" for e in entries)
    for i in range(2):
        with PIL.Image.open(photos / f"p{i}.png") as a, PIL.Image.open(out / f"p{i}.webp") as b:
            assert np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
    dataset = load_image_dataset(train_data_dir=out)
    assert len(dataset) == 2


def test_a_failed_copy_leaves_the_destination_as_it_was(photos, tmp_path, monkeypatch):
    out = tmp_path / "packed"
    pack_photos.pack(photos, out)
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(np, "array_equal", lambda a, b: False)  # as if WebP had changed a pixel
    with pytest.raises(SystemExit, match="does not decode to the same pixels"):
        pack_photos.pack(photos, out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_metadata_naming_a_missing_image_is_a_clear_error(photos, tmp_path):
    with (photos / "metadata.jsonl").open("a") as metadata:
        metadata.write(json.dumps({"file_name": "gone.png"}) + "\n")
    with pytest.raises(SystemExit, match="'gone.png' is not an image of"):
        pack_photos.pack(photos, tmp_path / "packed")
    assert not (tmp_path / "packed").exists()


def test_two_images_of_one_name_are_refused(photos, tmp_path):
    PIL.Image.open(photos / "p0.png").convert("RGB").save(photos / "p0.jpg")
    with pytest.raises(SystemExit, match="two images are named 'p0'"):
        pack_photos.pack(photos, tmp_path / "packed")
    assert not (tmp_path / "packed").exists()
