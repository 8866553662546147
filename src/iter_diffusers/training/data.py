"""Training data for ITER: HF ``datasets`` in, (HQ crop, LQ crop) tensor pairs out.

HQ-only datasets get their LQ images synthesised on the fly (:mod:`.degradations`); paired datasets (an HQ and a
pre-degraded LQ column, as the official ``PairedImageDataset``) are cropped jointly. Every random choice of a
sample (crop, flips, degradation) comes from a NumPy generator seeded with ``(seed, epoch, index)``, so a sample
is the same whichever worker or process makes it, and a resumed run sees exactly the data of an uninterrupted one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from ..utils.image_files import image_to_array, to_u8
from .degradations import augment, degrade, paired_random_crop

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """The training data cannot be used (missing path, missing column, no readable image)."""


def load_image_dataset(dataset_name=None, dataset_config_name=None, train_data_dir=None, cache_dir=None,
                       image_column="image", lq_image_column=None, split="train"):
    """Load a hub/local dataset by name, or an ``imagefolder`` directory, and check its image columns."""
    from datasets import load_dataset

    if (dataset_name is None) == (train_data_dir is None):
        raise DatasetError("pass exactly one of --dataset_name and --train_data_dir")
    try:
        if train_data_dir is not None:
            if not Path(train_data_dir).is_dir():
                raise DatasetError(f"--train_data_dir {train_data_dir}: no such directory")
            dataset = load_dataset("imagefolder", data_dir=str(train_data_dir), cache_dir=cache_dir, split=split)
        else:
            dataset = load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, split=split)
    except DatasetError:
        raise
    except Exception as error:  # datasets raises many types for missing/corrupt data
        source = train_data_dir or dataset_name
        raise DatasetError(f"cannot load the dataset {source!r}: {type(error).__name__}: {error}") from None
    for column in filter(None, (image_column, lq_image_column)):
        if column not in dataset.column_names:
            raise DatasetError(
                f"the dataset has no column {column!r}; its columns are {dataset.column_names} (see --image_column)"
            )
    if len(dataset) == 0:
        raise DatasetError("the dataset is empty")
    return dataset


def pil_to_array(image) -> np.ndarray:
    """PIL image of any mode (8 or 16 bit) -> HWC float32 RGB in [0, 1], by the package's one rule."""
    if not isinstance(image, PIL.Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    return image_to_array(image)


def _ensure_min_side(hq: np.ndarray, min_side: int) -> np.ndarray:
    """Upscale (bicubic) an image whose short side is below the crop size, so that it can be cropped."""
    height, width = hq.shape[:2]
    if min(height, width) >= min_side:
        return hq
    factor = min_side / min(height, width)
    size = (max(min_side, round(width * factor)), max(min_side, round(height * factor)))
    return image_to_array(PIL.Image.fromarray(to_u8(hq)).resize(size, PIL.Image.BICUBIC))


class SRTrainDataset(torch.utils.data.Dataset):
    """Random (HQ, LQ) crops from an HF dataset of images.

    Args:
        dataset (`datasets.Dataset`): its ``image_column`` holds the images (``lq_image_column`` the LQ ones of
            paired data).
        resolution (`int`): HQ crop side (a multiple of the scale; LQ crops are resolution / scale).
        scale (`int`): the SR factor s.
        degradation (`BSRGANLightConfig`, `RealESRGANConfig`, `dict` or `None`, defaults to `None`): the LQ
            synthesis of HQ-only data (`None`: light BSRGAN); ignored for paired data.
        seed (`int`, defaults to 0): base seed; call :meth:`set_epoch` every epoch.
        image_column (`str`, defaults to `"image"`): the column of the HQ images.
        lq_image_column (`str`, *optional*): the column of the LQ images of paired data.
        augment (`bool`, defaults to `True`): random flips and 90° rotations.
        max_bad_fraction (`float`, defaults to 0.5): above this fraction of unreadable images the dataset is
            declared broken.
    """

    def __init__(self, dataset, resolution: int, scale: int, degradation=None, seed: int = 0,
                 image_column: str = "image", lq_image_column: str | None = None, augment: bool = True,
                 max_bad_fraction: float = 0.5):
        if resolution % scale:
            raise DatasetError(f"--resolution {resolution} is not a multiple of the scale {scale}")
        self.dataset = dataset
        self.resolution, self.scale = resolution, scale
        self.degradation = degradation
        self.seed, self.epoch = seed, 0
        self.image_column, self.lq_image_column = image_column, lq_image_column
        self.augment = augment
        self.max_bad_fraction = max_bad_fraction
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _read(self, index: int):
        row = self.dataset[index]
        hq = pil_to_array(row[self.image_column])
        lq = pil_to_array(row[self.lq_image_column]) if self.lq_image_column else None
        return hq, lq

    def _read_or_skip(self, index: int):
        """Read sample ``index``; an unreadable image is logged once and replaced by the next readable one."""
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if candidate in self._bad:
                continue
            try:
                return candidate, self._read(candidate)
            except Exception as error:  # PIL/datasets raise many types for corrupt files
                self._bad.add(candidate)
                logger.warning("skipping unreadable training image #%d: %s: %s", candidate, type(error).__name__, error)
                if len(self._bad) > self.max_bad_fraction * len(self):
                    raise DatasetError(
                        f"{len(self._bad)} of {len(self)} training images are unreadable (last: #{candidate}: {error})"
                    ) from None
        raise DatasetError("no training image could be read")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index, (hq, lq) = self._read_or_skip(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if lq is None:
            hq = _ensure_min_side(hq, self.resolution)
            top = rng.integers(0, hq.shape[0] - self.resolution + 1)
            left = rng.integers(0, hq.shape[1] - self.resolution + 1)
            hq = hq[top : top + self.resolution, left : left + self.resolution]
            lq, hq = degrade(hq, self.scale, self.degradation, rng)
        else:
            if hq.shape[0] != lq.shape[0] * self.scale or hq.shape[1] != lq.shape[1] * self.scale:
                raise DatasetError(
                    f"paired sample #{index}: HQ {hq.shape[:2]} is not {self.scale}x LQ {lq.shape[:2]}"
                )
            hq, lq = paired_random_crop(hq, lq, self.resolution, self.scale, rng)
        if self.augment:
            hq, lq = augment([hq, lq], rng)
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)
        return {"hq": to_tensor(hq), "lq": to_tensor(lq), "index": index}


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "hq": torch.stack([s["hq"] for s in samples]),
        "lq": torch.stack([s["lq"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples]),
    }
