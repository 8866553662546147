"""The models the page offers, loading one (one pipeline in memory at a time), and the licence of its weights."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import metadata_load

from ..cli.upscale import DEFAULT_MODEL
from ..model_card import UNCHOSEN_LICENSE_NAME, WEIGHTS_ORIGINS
from ..official import OfficialWeightsError, official_pipeline_path
from ..pipelines import ITERPipeline
from ..pipelines.acceleration import optimize_pipeline
from .speed import SpeedMeter, calibrate

BUNDLED = "Bundled demo model (×4, small, runs on a CPU)"
#: The official release weights, downloaded and converted on first use (then cached), by their ``iter-sr`` names.
OFFICIAL = {
    "Official ITER ×4 (downloaded on first use; non-commercial)": "official-x4",
    "Official ITER ×2 (downloaded on first use; non-commercial)": "official-x2",
}
FOLDER = "Pipeline folder (path below)"
MODEL_CHOICES = (BUNDLED, *OFFICIAL, FOLDER)

#: Licence ids of model cards, as the page names them.
LICENCES = {
    "apache-2.0": "Apache-2.0",
    "cc-by-nc-sa-4.0": "CC BY-NC-SA 4.0 with the S-Lab licence: **non-commercial use only**",
    "cc0-1.0": "CC0 1.0",
}
#: ``license: other`` with this ``license_name``: the trainer chose none (``train_iter.py`` without ``--license``).
UNCHOSEN = "none chosen by whoever trained them (see the folder's model card)"
NO_CARD = ("not stated (the folder has no model card); weights converted from the official ITER release are "
           "CC BY-NC-SA 4.0 with the S-Lab licence, non-commercial use only")


class ModelError(ValueError):
    """A model choice that cannot be loaded; its message is written for the page."""


@dataclass
class LoadedModel:
    """A pipeline ready to run, with what the page says about it."""

    pipe: ITERPipeline
    name: str  # as the page names it
    licence: str
    speed: SpeedMeter


def resolve_source(choice: str, folder: str | None) -> Path:
    """The pipeline folder of a model choice (the official weights are downloaded and converted the first time);
    a ModelError says what is wrong with it."""
    if choice == BUNDLED:
        if not DEFAULT_MODEL.is_dir():
            raise ModelError(f"The bundled demo model is not installed (expected at {DEFAULT_MODEL}).")
        return DEFAULT_MODEL
    if choice in OFFICIAL:
        try:
            return official_pipeline_path(OFFICIAL[choice], progress=False)
        except OfficialWeightsError as error:
            raise ModelError(f"The official weights cannot be had: {error}") from None
    if choice != FOLDER:
        raise ModelError(f"Unknown model choice {choice!r}.")
    text = (folder or "").strip()
    if not text:
        raise ModelError("Type the path of a pipeline folder (e.g. one written by scripts/convert_weights.py).")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise ModelError(f"{text}: no such folder.")
    if not (path / "model_index.json").is_file():
        raise ModelError(f"{text}: not a diffusers pipeline folder (no model_index.json).")
    return path.resolve()


def read_licence(folder: Path) -> str:
    """The licence of the weights in ``folder``, from the metadata of its model card (README.md): ``license``
    (``license_name`` for ``other``), and what the weights were made from (``weights_origin``) where it says."""
    card = folder / "README.md"
    if not card.is_file():
        return NO_CARD
    try:
        metadata = metadata_load(card) or {}
    except Exception:  # malformed YAML front matter
        metadata = {}
    licence, name = str(metadata.get("license") or "").lower(), metadata.get("license_name")
    if not licence:
        return "not stated in the folder's model card"
    if licence == "other" and name:
        text = UNCHOSEN if name == UNCHOSEN_LICENSE_NAME else str(name)
    else:
        text = LICENCES.get(licence, str(metadata["license"]))
    origin = WEIGHTS_ORIGINS.get(str(metadata.get("weights_origin")))
    return f"{text} ({origin})" if origin else text


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def announce(message: str) -> None:
    """Tell the server's console of a one-off step that makes a load wait (an OpenVINO conversion, the int8
    calibration: minutes for a large model, with the page showing only that it is busy)."""
    print(f"iter-sr-app: {message}", file=sys.stderr, flush=True)


def load_model(source: Path, device: torch.device, name: str | None = None) -> LoadedModel:
    """Load the pipeline in ``source`` onto ``device``, in the device's fast mode (as ``iter-sr --dtype auto``),
    and measure its speed there."""
    try:
        pipe = ITERPipeline.from_pretrained(source).to(device)
    except Exception as error:
        raise ModelError(f"Cannot load the pipeline in {source}: {' '.join(str(error).split())[:300]}") from None
    if not isinstance(pipe, ITERPipeline):
        raise ModelError(f"{source} holds a {type(pipe).__name__}, not an ITER pipeline.")
    optimize_pipeline(pipe, "auto", notify=announce)
    pipe.set_progress_bar_config(disable=True)
    return LoadedModel(pipe, name or f"`{source}`", read_licence(source), calibrate(pipe))


def model_name(choice: str) -> str | None:
    """How the page names the model of ``choice``; None for a folder (named by its path)."""
    if choice == BUNDLED:
        return "the bundled demo model"
    return f"the official ITER weights ({OFFICIAL[choice]})" if choice in OFFICIAL else None


class ModelStore:
    """The pipeline in use: loaded when first asked for, kept until another one is (one model in memory).

    A choice is resolved to its folder only when it is loaded: resolving the official weights checks their files.
    """

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device or default_device()
        self._lock = threading.Lock()
        self._key: tuple[str, str] | None = None
        self._current: LoadedModel | None = None

    @property
    def current(self) -> LoadedModel | None:
        """The model loaded last; None before the first load and after a failed one."""
        return self._current

    def get(self, choice: str, folder: str | None = None) -> LoadedModel:
        key = (choice, (folder or "").strip() if choice == FOLDER else "")
        with self._lock:
            if self._current is None or self._key != key:
                self._current = self._key = None  # let the previous pipeline go before the next one loads
                self._current = load_model(resolve_source(choice, folder), self.device, model_name(choice))
                self._key = key
            return self._current
