"""The output of every ITER network that scores token positions (E_l, φ_e, φ_r)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput


@dataclass
class ITERLogitsOutput(BaseOutput):
    """``logits`` (B, C, h, w), one score vector per token position: over the K codebook entries for E_l (whose
    argmax is S_l) and φ_r, over (wrong, right) for φ_e."""

    logits: torch.Tensor
