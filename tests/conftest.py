"""Shared test fixtures: the official tiny checkpoints, converted once per session through the real CLI path."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

OFFICIAL = Path(__file__).parent / "fixtures" / "official"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    return OFFICIAL


@pytest.fixture(scope="session")
def converted_dir(tmp_path_factory) -> Path:
    """The tiny official checkpoints converted with ``convert_and_save`` (what scripts/convert_weights.py runs)."""
    from iter_diffusers.conversion import convert_and_save

    out = tmp_path_factory.mktemp("converted") / "tiny-x4"
    return convert_and_save(OFFICIAL / "tiny_swinvqgan.pth", OFFICIAL / "tiny_iter_x4.pth", out)


@pytest.fixture()
def pipe(converted_dir):
    from iter_diffusers import ITERPipeline

    pipeline = ITERPipeline.from_pretrained(converted_dir)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def seeded(seed: int = 123) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def write_imagefolder(folder: Path, images: list[np.ndarray], **fields) -> Path:
    """An ``imagefolder`` of PNGs ``p0.png``, ``p1.png``, … with a ``metadata.jsonl`` row per image (``fields`` in
    each), as the demo data sets are written."""
    folder.mkdir(parents=True)
    rows = []
    for i, pixels in enumerate(images):
        PIL.Image.fromarray(pixels).save(folder / f"p{i}.png")
        rows.append({"file_name": f"p{i}.png", **fields})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder
