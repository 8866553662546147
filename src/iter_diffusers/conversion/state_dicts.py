"""Reading the official checkpoints, and taking their tensors apart key by key with errors that say where."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

StateDict = dict[str, torch.Tensor]


class ConversionError(ValueError):
    """An official checkpoint is unreadable, incomplete, inconsistent or not an ITER checkpoint."""


def load_official_checkpoint(path: str | Path) -> StateDict:
    """Read an official ``.pth`` safely (``weights_only=True``) and return its ``params_ema`` or ``params``."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, random bytes, an empty file, a pickle of arbitrary objects ...
        # Never echo PyTorch's advice to load with weights_only=False: that would run the file's code.
        if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error):
            raise ConversionError(f"{path}: not a PyTorch checkpoint of tensors (it pickles other objects)") from None
        raise ConversionError(f"{path}: not a PyTorch checkpoint (or corrupt)") from None
    if not isinstance(checkpoint, dict) or not ({"params", "params_ema"} & checkpoint.keys()):
        raise ConversionError(f"{path}: not an official ITER checkpoint (expected a dict with 'params' or 'params_ema')")
    # The official VQModel prefers params_ema when present.
    state = checkpoint["params_ema"] if "params_ema" in checkpoint else checkpoint["params"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: its 'params' entry is not a state dict of tensors")
    return {k: v.detach().cpu() for k, v in state.items()}


def take(state: StateDict, prefix: str) -> StateDict:
    """Remove and return every entry under ``prefix`` (prefix stripped)."""
    keys = [k for k in state if k.startswith(prefix)]
    return {k[len(prefix) :]: state.pop(k) for k in keys}


def indices(state: StateDict, pattern: str) -> list[int]:
    """The sorted integers that ``pattern``'s first group matches in the keys of ``state``."""
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return sorted(found)


def require(state: StateDict, key: str, where: str) -> torch.Tensor:
    """``state[key]``, or a :class:`ConversionError` naming what is missing where."""
    if key not in state:
        raise ConversionError(f"{where}: missing key {key!r} (truncated or not an ITER checkpoint?)")
    return state[key]


def load_strict(model: torch.nn.Module, weights: StateDict, where: str) -> None:
    """Load ``weights`` into ``model`` after checking that they match its state dict key for key and in shape."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ConversionError(f"{where}: {len(missing)} missing / {len(unexpected)} unexpected weights ({detail})")
    for key, value in weights.items():
        if value.shape != expected[key].shape:
            raise ConversionError(f"{where}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    model.eval()
