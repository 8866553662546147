"""The official release files, and the two of them (VQGAN, ITER x2/x4) converted into one :class:`ITERPipeline`."""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import ITERRefinementTransformer, ITERTokenEvaluator
from .networks import convert_lq_encoder, convert_token_network, convert_vqgan
from .state_dicts import ConversionError, StateDict, load_official_checkpoint, take

#: Where the official release files are downloaded from (``ITER_RELEASE_URL`` overrides it, see :mod:`..official`).
OFFICIAL_RELEASE_URL = "https://github.com/chaofengc/ITER/releases/download/v0.1.0/"
VQGAN_RELEASE_FILE = "ITER_swinvqgan.pth"
ITER_RELEASE_FILES = {4: "ITER_x4.pth", 2: "ITER_x2.pth"}

PHI_E_PREFIX = "token_refine_net.token_crit_net."
PHI_R_PREFIX = "token_refine_net.token_refine_net."
LQ_PREFIX = "lq_encoder.model."


def split_iter_checkpoint(state: StateDict, vqgan_state: StateDict) -> StateDict:
    """Drop the ``vqgan.*`` copy from an ITER state dict after checking that it equals the VQGAN file.

    The ``generator.*`` decoder alias may be present on either side or not; where present it must equal the decoder.
    """
    copy = take(state, "vqgan.")
    if not copy:
        return state

    def without_alias(sd: StateDict, where: str) -> StateDict:
        for key in [k for k in sd if k.startswith("generator.")]:
            twin = sd.get("decoder." + key[len("generator.") :])
            if twin is None or not torch.equal(sd[key], twin):
                raise ConversionError(f"{where}: {key} differs from its decoder.* twin")
        return {k: v for k, v in sd.items() if not k.startswith("generator.")}

    copy, reference = without_alias(copy, "ITER file vqgan.*"), without_alias(vqgan_state, "VQGAN file")
    if copy.keys() != reference.keys():
        differing = sorted(copy.keys() ^ reference.keys())
        raise ConversionError(f"the ITER file's vqgan.* keys differ from the VQGAN file's (e.g. {differing[0]!r})")
    for key, value in copy.items():
        if value.shape != reference[key].shape or not torch.equal(value, reference[key]):
            raise ConversionError(
                f"the ITER file's vqgan.{key} differs from the VQGAN file: checkpoints do not belong together"
            )
    return state


def convert_official_checkpoints(vqgan_checkpoint: str | Path, iter_checkpoint: str | Path):
    """Read ``ITER_swinvqgan.pth`` and ``ITER_x{2,4}.pth`` and return a ready :class:`ITERPipeline` (fp32)."""
    from ..pipelines import ITERPipeline
    from ..schedulers import MaskedTokenScheduler

    vqgan_state = load_official_checkpoint(vqgan_checkpoint)
    iter_state = load_official_checkpoint(iter_checkpoint)
    if any(k.startswith(LQ_PREFIX) for k in vqgan_state) or not any(k.startswith("encoder.") for k in vqgan_state):
        raise ConversionError(f"{vqgan_checkpoint}: not a Swin-VQGAN checkpoint (were the two files swapped?)")
    if not any(k.startswith(LQ_PREFIX) for k in iter_state):
        raise ConversionError(f"{iter_checkpoint}: no lq_encoder.* keys, not an ITER x2/x4 checkpoint")
    iter_state = split_iter_checkpoint(dict(iter_state), vqgan_state)
    try:
        vqvae = convert_vqgan(dict(vqgan_state))
        num_codes = vqvae.config.num_vq_embeddings
        encoder = convert_lq_encoder(take(iter_state, LQ_PREFIX), num_codes)
        evaluator = convert_token_network(take(iter_state, PHI_E_PREFIX), ITERTokenEvaluator, num_codes, "φ_e (token_crit_net)", condition_first=False)
        refiner = convert_token_network(take(iter_state, PHI_R_PREFIX), ITERRefinementTransformer, num_codes, "φ_r (token_refine_net)", condition_first=True)
    except (KeyError, IndexError, RuntimeError) as error:
        raise ConversionError(f"checkpoint layout not understood: {type(error).__name__}: {error}") from None
    if iter_state:
        raise ConversionError(f"{iter_checkpoint}: {len(iter_state)} unexpected keys, e.g. {sorted(iter_state)[0]!r}")
    if evaluator.config.out_channels != 2 or refiner.config.out_channels != num_codes or not refiner.config.use_mask_token:
        raise ConversionError("token networks do not have the φ_e (2 outputs) / φ_r (K+1 inputs, K outputs) shapes")
    scheduler = MaskedTokenScheduler()  # official inference: T = 8, α = 0.7, temperatures 1, linear
    return ITERPipeline(vqvae=vqvae, encoder=encoder, evaluator=evaluator, refiner=refiner, scheduler=scheduler)
