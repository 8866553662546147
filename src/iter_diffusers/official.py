"""The official ITER weights by name: download the release files once, convert them once, load from the cache.

``official-x4`` and ``official-x2`` name the v0.1.0 release of github.com/chaofengc/ITER (``ITER_swinvqgan.pth`` plus
``ITER_x4.pth`` or ``ITER_x2.pth``). The cache lives in huggingface_hub's assets cache (``HF_HOME/assets``, or
``HF_ASSETS_CACHE``), the place it keeps for libraries' files::

    iter-diffusers/official/release/ITER_swinvqgan.pth, ITER_x4.pth, ...   the downloaded release files
    iter-diffusers/official/official-x4/                                      the converted pipeline
    iter-diffusers/official/local-<digest>/                                   a pipeline converted from local files

Each converted folder's card records the SHA-256 of the files it was converted from; every use compares them with
the files at hand and converts again when they differ. ``ITER_RELEASE_URL`` replaces the release URL (a mirror);
with ``HF_HUB_OFFLINE=1`` nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from filelock import FileLock
from huggingface_hub import constants

from .conversion import (
    ITER_RELEASE_FILES,
    OFFICIAL_RELEASE_URL,
    VQGAN_RELEASE_FILE,
    ConversionError,
    convert_and_save,
    sha256_file,
)
from .download import DownloadError, HostUnreachableError, download_file
from .model_card import recorded_source_files
from .pipelines.hub_code import index_has_hub_code

RELEASE_URL_ENV = "ITER_RELEASE_URL"
OFFICIAL_MODELS = {f"official-x{scale}": name for scale, name in ITER_RELEASE_FILES.items()}


class OfficialWeightsError(RuntimeError):
    """The official weights cannot be had: offline, a failed download, or files that do not convert."""


def release_url() -> str:
    """The base URL of the release files: ``ITER_RELEASE_URL`` if set, else the official v0.1.0 release."""
    url = os.environ.get(RELEASE_URL_ENV) or OFFICIAL_RELEASE_URL
    return url if url.endswith("/") else url + "/"


def cache_dir() -> Path:
    """The folder that holds the release files and the converted pipelines (see the module docstring)."""
    return Path(constants.HF_ASSETS_CACHE) / "iter-diffusers" / "official"


def is_official_name_or_file(model: str) -> bool:
    """Whether ``model`` is meant for :func:`official_pipeline_path`: an alias or a path ending in ``.pth``."""
    return model in OFFICIAL_MODELS or model.lower().endswith(".pth")


def official_pipeline_path(model: str = "official-x4", *, progress: bool = True) -> Path:
    """The converted pipeline folder of the official weights, downloading and converting them on first use.

    Args:
        model (`str`, defaults to `"official-x4"`):
            ``"official-x4"`` or ``"official-x2"`` (downloaded from :func:`release_url`), or the path of a local
            ``ITER_x4.pth`` / ``ITER_x2.pth`` (any name ending in ``.pth``) with ``ITER_swinvqgan.pth`` in the
            same folder.
        progress (`bool`, defaults to `True`):
            Show download progress bars.

    Returns:
        `Path`: a folder for ``ITERPipeline.from_pretrained``, in :func:`cache_dir`.

    Raises:
        OfficialWeightsError: offline with nothing cached, a failed download, or files that do not convert
            (downloaded ones are then removed from the cache). The message is one line.
    """
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(cache / ".lock"):
        if model in OFFICIAL_MODELS:
            return _release_pipeline(model, cache, progress)
        if model.lower().endswith(".pth"):
            return _local_pipeline(Path(model).expanduser(), cache)
    raise OfficialWeightsError(f"{model!r}: expected {' or '.join(OFFICIAL_MODELS)}, or the path of a .pth file")


def load_official_pipeline(model: str = "official-x4", *, progress: bool = True, **kwargs):
    """Load the official ITER weights as an :class:`ITERPipeline`, downloading and converting them on first use.

    Args:
        model (`str`, defaults to `"official-x4"`):
            ``"official-x4"``, ``"official-x2"`` or a local release ``.pth`` file; see :func:`official_pipeline_path`.
        progress (`bool`, defaults to `True`):
            Show download progress bars.
        **kwargs:
            Passed to ``ITERPipeline.from_pretrained`` (e.g. ``dtype=torch.float16``).

    Returns:
        `ITERPipeline`: the converted official pipeline (licence CC BY-NC-SA 4.0 + S-Lab, non-commercial).

    Example:

    ```py
    >>> import torch
    >>> from iter_diffusers import load_official_pipeline

    >>> pipe = load_official_pipeline("official-x4")
    >>> image = pipe(photo, generator=torch.Generator().manual_seed(123)).images[0]
    ```
    """
    from .pipelines import ITERPipeline

    return ITERPipeline.from_pretrained(official_pipeline_path(model, progress=progress), **kwargs)


def _release_pipeline(model: str, cache: Path, progress: bool) -> Path:
    release = cache / "release"
    files = [release / VQGAN_RELEASE_FILE, release / OFFICIAL_MODELS[model]]
    missing = [path for path in files if not path.is_file()]
    if missing and constants.HF_HUB_OFFLINE:
        raise OfficialWeightsError(f"{model} is not in the cache ({cache}) and HF_HUB_OFFLINE=1 forbids downloading "
                                   f"it: {_fetch_by_hand(files)}")
    release.mkdir(exist_ok=True)
    try:
        for path in missing:
            download_file(release_url() + path.name, path, progress=progress)
        return _check_scale(_convert_once(files, _digests(files), cache / model, release_url()), model)
    except HostUnreachableError as error:
        raise OfficialWeightsError(f"cannot download {model}: {error}: {_fetch_by_hand(files)}") from None
    except DownloadError as error:
        raise OfficialWeightsError(f"cannot download {model}: {error}") from None
    except ConversionError as error:
        for path in files:
            path.unlink(missing_ok=True)
        raise OfficialWeightsError(
            f"the release files from {release_url()} do not convert, so they were removed from the cache: {error}"
        ) from None


def _fetch_by_hand(files: list[Path]) -> str:
    """What to do when this process cannot download the release ``files`` (VQGAN, ITER) itself."""
    vqgan, weights = files
    return (f"download {vqgan.name} and {weights.name} from {release_url()} into {vqgan.parent}, or anywhere and "
            f"pass the path of {weights.name} (with {vqgan.name} next to it) instead")


def _check_scale(folder: Path, model: str) -> Path:
    """``folder`` if it upscales as ``model`` says; otherwise it is deleted and a ConversionError raised."""
    scale = json.loads((folder / "encoder" / "config.json").read_text())["scale_factor"]
    if model != f"official-x{scale}":
        shutil.rmtree(folder)
        raise ConversionError(f"{OFFICIAL_MODELS[model]} holds a x{scale} model")
    return folder


def _local_pipeline(iter_file: Path, cache: Path) -> Path:
    vqgan_file = iter_file.with_name(VQGAN_RELEASE_FILE)
    for path in (iter_file, vqgan_file):
        if not path.is_file():
            raise OfficialWeightsError(f"{path}: no such file ({VQGAN_RELEASE_FILE} must sit next to {iter_file.name})")
    files = [vqgan_file, iter_file]
    digests = _digests(files)
    key = hashlib.sha256("".join(digests.values()).encode()).hexdigest()[:16]
    try:
        return _convert_once(files, digests, cache / f"local-{key}", None)
    except ConversionError as error:
        raise OfficialWeightsError(str(error)) from None


def _digests(files: list[Path]) -> dict[str, str]:
    return {path.name: sha256_file(path) for path in files}


def _carries_code(folder: Path) -> bool:
    index = folder / "model_index.json"
    return index.is_file() and index_has_hub_code(json.loads(index.read_text(encoding="utf-8")))


def _convert_once(files: list[Path], digests: dict[str, str], folder: Path, url: str | None) -> Path:
    """``folder`` if its card records ``digests`` and it carries its code; otherwise convert ``files`` into it
    (replacing it) first. A cache entry of the earlier layout (no code) is converted again, so that plain diffusers
    can load it too."""
    if recorded_source_files(folder) != digests or not _carries_code(folder):
        if folder.is_dir() and not (folder / "model_index.json").is_file():  # a broken cache entry of ours
            shutil.rmtree(folder)
        convert_and_save(*files, folder, overwrite=True, release_url=url, sources=digests)
    return folder
