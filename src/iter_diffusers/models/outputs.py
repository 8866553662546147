"""The outputs of the ITER networks that score token positions (E_l, φ_e, φ_r)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.utils import BaseOutput


@dataclass
class ITERLogitsOutput(BaseOutput):
    """``logits`` (B, C, h, w), one score vector per token position: over the K codebook entries for E_l (whose
    argmax is S_l) and φ_r, over (wrong, right) for φ_e."""

    logits: torch.Tensor


@dataclass
class ITERLatentLogitsOutput(ITERLogitsOutput):
    """``logits`` as :class:`ITERLogitsOutput`, and the ``latents`` (B, C, h, w) they score against the codebook
    (E_l designs that work in the VQGAN's latent space, whose latents the training can regress)."""

    latents: torch.Tensor | None = None
