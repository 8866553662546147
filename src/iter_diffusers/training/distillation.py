"""Slimmer networks distilled from a trained pipeline: the same tokens and images, less computation.

At the bundled model's defaults most of the time goes to the layers at the output resolution: the first level of
E_l (which encodes the bicubic ×s upscale) and the last level of the VQGAN decoder. A student with narrower
levels there (e.g. ``base_channels`` 16 with ``channel_multipliers`` (1, 2, 4, 8) in place of 32 with
(1, 1, 2, 4): the same widths below the top level) learns to do what the teacher does:

* the VQGAN's decoder renders the teacher's tokens (the HQ image's and E_l's S_l) as the teacher's decoder does;
* the VQGAN's encoder gives the teacher encoder's latents (so the HQ tokens that training uses stay the same);
* E_l gives the teacher E_l's latents (or, for an E_l without latents, its token distribution).

The codebook is the teacher's and stays frozen, so every token keeps its meaning and φ_e and φ_r (which work on
tokens only) stay valid unchanged. The targets are the teacher's outputs, not the HQ photo: the student copies
the teacher's behaviour, good and bad, and the teacher's quality bars are what it must hold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: The pipeline components a distillation run may replace by a slimmer student.
DISTILLED_COMPONENTS = ("vqvae", "encoder")


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> tuple[int, int]:
    """Copy every teacher tensor whose name and shape the student shares (the levels of equal width, the Swin
    trunk, the codebook); the rest keeps its fresh initialisation. Returns (copied, student tensors)."""
    target = student.state_dict()
    copied = {name: tensor for name, tensor in teacher.state_dict().items()
              if name in target and target[name].shape == tensor.shape}
    student.load_state_dict({**target, **copied})
    return len(copied), len(target)


def _fp32_targets(hq, lq, teacher_vqvae, teacher_encoder):
    """The teacher's outputs in fp32 whatever the autocast (bf16 would move near-tied tokens)."""
    with torch.no_grad(), torch.autocast(hq.device.type, enabled=False):
        hq_latents = teacher_vqvae.encode(hq.to(teacher_vqvae.dtype)).latents
        encoder_out = teacher_encoder(lq.to(teacher_encoder.dtype))
        tokens = torch.cat([teacher_vqvae.quantize.indices(hq_latents), encoder_out.logits.argmax(dim=1)])
        codes = teacher_vqvae.quantize.get_codebook_entry(tokens)
        images = teacher_vqvae.render(codes)
    return hq_latents, encoder_out, codes, images


def distillation_losses(students: dict, teacher_vqvae, teacher_encoder, lq: torch.Tensor, hq: torch.Tensor,
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The students' losses on one batch; returns (total, named terms).

    ``students`` maps ``"vqvae"`` and/or ``"encoder"`` to the networks being trained. The decoder term is the L1
    between the student's and the teacher's renderings of the HQ tokens and of S_l (images in [0, 1]); the
    encoder terms are the MSE to the teacher's latents (E_l: the KL to its token distribution when it has no
    latents). ``decoder_psnr`` (not optimised) says how close the decoder is, in dB against the teacher's image.
    """
    hq_latents, encoder_out, codes, images = _fp32_targets(hq, lq, teacher_vqvae, teacher_encoder)
    terms: dict[str, torch.Tensor] = {}
    if "vqvae" in students:
        vqvae = students["vqvae"]
        rendered = vqvae.render(codes).float()
        terms["distill_decoder_l1"] = (rendered - images).abs().mean()
        terms["distill_tokenizer_mse"] = F.mse_loss(vqvae.encode(hq.to(vqvae.dtype)).latents.float(), hq_latents)
    if "encoder" in students:
        out = students["encoder"](lq)
        if getattr(out, "latents", None) is not None and encoder_out.latents is not None:
            terms["distill_encoder_mse"] = F.mse_loss(out.latents.float(), encoder_out.latents)
        else:
            terms["distill_encoder_kl"] = F.kl_div(out.logits.float().log_softmax(1),
                                                   encoder_out.logits.log_softmax(1), log_target=True,
                                                   reduction="batchmean") / out.logits[0, 0].numel()
    total = sum(terms.values())
    if "vqvae" in students:
        mse = (rendered.detach() - images).pow(2).mean().clamp_min(1e-12)
        terms["decoder_psnr"] = -10 * torch.log10(mse)
    return total, terms
