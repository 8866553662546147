"""Which compute device the process has."""

from __future__ import annotations

import torch


def has_accelerator() -> bool:
    """Whether torch sees an accelerator (CUDA, XPU, MPS, ...). Without one, several processes launched by
    ``accelerate launch`` only cooperate when accelerate is told they are CPU processes (``cpu=True``); otherwise
    each one runs alone, on all the data."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()
