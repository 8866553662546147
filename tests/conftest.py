"""Shared test fixtures: the official tiny checkpoints, converted once per session through the real CLI path."""

from pathlib import Path

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
