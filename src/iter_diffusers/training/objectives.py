"""ITER's training objectives as plain functions of the networks and a batch (the official basicsr model's losses).

Stage I trains the Swin-VQGAN as an autoencoder. Stages II/III train, on top of the frozen VQGAN, E_l (token
cross-entropy), φ_e (class-balanced CE on S_l plus a mask loss on φ_r's tokens) and φ_r (refinement CE on a
cosine-masked ground truth, weighted per sample by its masked fraction, plus a perceptual loss through the
frozen decoder with a straight-through Gumbel-softmax).

Two official behaviours are reproduced by default and can be switched off (see the README):

* ``encoder_pixel_loss=False``: the official code decodes ``gumbel_softmax(...).long()``, which cuts the
  gradient, so E_l learns from the token CE only. ``True`` lets the L1 + perceptual loss of E_l's own decode
  reach it through the straight-through estimator.
* the perceptual loss is averaged over ``cat[E_l output, φ_r output]``; only the φ_r half has a gradient, so
  φ_r's perceptual term carries weight ½ (``perceptual_weight / 2``) unless ``encoder_pixel_loss`` is on.

:func:`decoder_restoration_losses` is an addition for the VQGAN's decoder (the lq stage's ``decoder`` component):
it learns to render E_l's tokens S_l as the HQ image while still rendering the HQ image's own tokens.

Additions for E_l, off by default: ``embedding_weight > 0`` adds :func:`expected_embedding_loss`;
``latent_weight > 0`` adds :func:`latent_regression_loss` (E_l designs with latents, such as
:class:`~iter_diffusers.models.ITERUpsamplingEncoder`); ``token_ce_weight`` scales (or, at 0, drops) the token CE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import class_balanced_cross_entropy, generator_hinge_loss, ssim_loss


def _token_ce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (B, K, h, w) logits against (B, h, w) targets, computed in fp32."""
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


def straight_through_decode(vqvae, logits: torch.Tensor) -> torch.Tensor:
    """Render a hard Gumbel-softmax sample of ``logits`` with gradients to the logits (straight-through)."""
    one_hot = F.gumbel_softmax(logits.float(), tau=1.0, hard=True, dim=1)
    return vqvae.render(vqvae.quantize.embed_probabilities(one_hot.to(vqvae.dtype)))


def straight_through_render(vqvae, latents: torch.Tensor) -> torch.Tensor:
    """Render ``latents`` snapped to their nearest codes, with the gradient passed straight through to the latents
    (what an adversarial loss on E_l's own image needs)."""
    codes = vqvae.quantize.get_codebook_entry(vqvae.quantize.indices(latents))
    return vqvae.render(latents + (codes.to(latents.dtype) - latents).detach())


def expected_embedding_loss(quantizer, logits: torch.Tensor, gt_tokens: torch.Tensor) -> torch.Tensor:
    """Squared distance between E_l's softmax-expected code vector and the ground-truth code vector.

    The token CE counts every wrong code as equally wrong; this term prefers codes near the right one in the
    codebook, which decode to nearly the right patch. It is divided by the codebook's per-dimension variance so
    that its weight does not depend on the codebook's scale. Computed in fp32; the codebook gets no gradient.
    """
    codebook = quantizer.embedding.weight.detach().float()
    expected = torch.einsum("bkhw,kc->bchw", logits.float().softmax(dim=1), codebook)
    target = codebook[gt_tokens].permute(0, 3, 1, 2)
    return F.mse_loss(expected, target) / codebook.var(dim=0).mean().clamp_min(1e-12)


def latent_regression_loss(latents: torch.Tensor | None, hq_latents: torch.Tensor, codebook: torch.Tensor,
                           ) -> torch.Tensor:
    """Squared distance between E_l's latents of the LQ image and the VQGAN's latents of the HQ image.

    Divided by the codebook's per-dimension variance, like :func:`expected_embedding_loss`. It moves E_l's latents
    (and so their nearest codes) towards the HQ image's without re-weighting the codes against each other.
    """
    if latents is None:
        raise ValueError("this E_l has no latents to regress: the latent loss needs an E_l that outputs them "
                         "(ITERUpsamplingEncoder, e.g. from --encoder_from_vqgan)")
    variance = codebook.detach().float().var(dim=0).mean().clamp_min(1e-12)
    return F.mse_loss(latents.float(), hq_latents.float()) / variance


def lq_stage_losses(vqvae, encoder, evaluator, refiner, scheduler, lq, hq, *, train=("encoder", "evaluator", "refiner"),
                    perceptual=None, perceptual_weight: float = 1.0, encoder_pixel_loss: bool = False,
                    pixel_weight: float = 1.0, embedding_weight: float = 0.0, decode_refined: bool = False,
                    token_ce_weight: float = 1.0, latent_weight: float = 0.0, decode_encoder: bool = False,
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
    """Losses of the LQ stage for one batch. Returns (total, named terms for logging, φ_r's decoded image).

    φ_r's tokens are decoded (straight-through) for the perceptual loss, and also when ``decode_refined`` (an
    adversarial loss needs the image whatever the perceptual weight). ``decode_encoder`` returns E_l's own image
    instead (its latents rendered straight-through; E_l designs with latents only). Otherwise the image is None.
    """
    # The ground truth in the VQGAN's own precision whatever the autocast: bf16/fp16 latents move near-tied
    # tokens, and every loss below is measured against these.
    with torch.no_grad(), torch.autocast(hq.device.type, enabled=False):
        hq_latents = vqvae.encode(hq.to(vqvae.dtype)).latents
        gt_tokens = vqvae.quantize.indices(hq_latents)
    terms: dict[str, torch.Tensor] = {}
    encoded = encoder(lq)
    logits = encoded.logits
    if "encoder" in train:
        if token_ce_weight > 0:
            terms["token_ce"] = token_ce_weight * _token_ce(logits, gt_tokens)
        if latent_weight > 0:
            codebook = vqvae.quantize.embedding.weight
            latents = getattr(encoded, "latents", None)
            terms["encoder_latent"] = latent_weight * latent_regression_loss(latents, hq_latents, codebook)
        if embedding_weight > 0:
            terms["encoder_embedding"] = embedding_weight * expected_embedding_loss(vqvae.quantize, logits, gt_tokens)
        if encoder_pixel_loss:
            restored = straight_through_decode(vqvae, logits)
            terms["encoder_l1"] = pixel_weight * (restored.float() - hq).abs().mean()
            if perceptual is not None and perceptual_weight > 0:
                terms["encoder_perceptual"] = 0.5 * perceptual_weight * perceptual(restored.float(), hq)
    encoder_image = None
    if "encoder" in train and decode_encoder:
        latents = getattr(encoded, "latents", None)
        if latents is None:
            raise ValueError("this E_l has no latents to render: decode_encoder needs an ITERUpsamplingEncoder")
        encoder_image = straight_through_render(vqvae, latents.to(vqvae.dtype))
    lq_tokens = logits.argmax(dim=1).detach()  # S_l

    crit = evaluator(lq_tokens, lq_tokens).logits
    trusted = crit.argmax(dim=1).detach().float()  # official: argmax of a no-grad φ_e call (same values)
    if "evaluator" in train:
        right = (gt_tokens == lq_tokens).long()
        terms["evaluator_init"] = class_balanced_cross_entropy(crit.float().permute(0, 2, 3, 1).flatten(0, 2), right.flatten())

    batch, height, width = gt_tokens.shape
    # φ_r trains on the official training schedule (cosine), whatever schedule the pipeline samples with.
    _, visible = scheduler.add_noise(gt_tokens, masking_schedule="cosine")  # φ_r takes the ids and the visible mask
    refine_logits = refiner(gt_tokens, lq_tokens, visible_mask=visible, trusted_mask=trusted).logits
    refined_image = None
    if "refiner" in train:
        masked_fraction = (1 - visible).flatten(1).mean(1)  # ρ̂_b
        per_position = _token_ce(refine_logits, gt_tokens, reduction="none").flatten(1)
        terms["refine_ce"] = (per_position * masked_fraction[:, None]).mean()
        use_perceptual = perceptual is not None and perceptual_weight > 0
        if use_perceptual or decode_refined:
            refined_image = straight_through_decode(vqvae, refine_logits)
        if use_perceptual:
            terms["refine_perceptual"] = 0.5 * perceptual_weight * perceptual(refined_image.float(), hq)
    if "evaluator" in train:
        refined_tokens = refine_logits.argmax(dim=1).detach()
        mask_logits = evaluator(refined_tokens, lq_tokens).logits
        right = (gt_tokens == refined_tokens).long()
        terms["evaluator_mask"] = _token_ce(mask_logits, right)
    total = sum(terms.values())
    terms["token_accuracy"] = (lq_tokens == gt_tokens).float().mean()
    return total, terms, refined_image if refined_image is not None else encoder_image


def vqgan_losses(vqvae, hq, *, discriminator=None, perceptual=None, l1_weight=1.0, perceptual_weight=1.0,
                 ssim_weight=1.0, gan_weight=0.1, vq_weight=1.0,
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Stage I generator losses: VQ (legacy β) + L1 + perceptual + (1 − SSIM) + hinge GAN. Returns the
    reconstruction too (for the discriminator step). ``vq_weight=0`` leaves out the VQ term, a constant when the
    encoder and codebook are frozen."""
    # The dtype from the parameters: a distributed wrapper around the VQGAN has no ``dtype``.
    out = vqvae(hq.to(next(vqvae.parameters()).dtype))
    reconstruction = out.sample.float()
    terms = {"l1": l1_weight * (reconstruction - hq).abs().mean()}
    if vq_weight > 0:
        terms["vq"] = vq_weight * out.commit_loss.float()
    if perceptual is not None and perceptual_weight > 0:
        terms["perceptual"] = perceptual_weight * perceptual(reconstruction, hq)
    if ssim_weight > 0:
        terms["ssim"] = ssim_weight * ssim_loss(reconstruction, hq)
    if discriminator is not None and gan_weight > 0:
        terms["gan_g"] = gan_weight * generator_hinge_loss(discriminator(reconstruction))
    return sum(terms.values()), terms, reconstruction


def decoder_restoration_losses(vqvae, encoder, lq, hq, *, l1_weight: float = 1.0, ssim_weight: float = 1.0,
                               perceptual=None, perceptual_weight: float = 1.0,
                               ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """Losses of the VQGAN decoder fine-tuned on E_l's tokens; returns (total, named terms, S_l's image).

    The frozen E_l picks the tokens S_l of the LQ image (what the pipeline renders where φ_e trusts S_l); their
    rendering is pulled towards the HQ image (L1 + (1 − SSIM) + perceptual), as is the rendering of the HQ image's
    own tokens, so the decoder stays the HQ VQGAN's decoder that φ_r's tokens need. No token changes and only the
    decoder gets a gradient (the codes are detached). S_l's image is returned for an adversarial loss.
    """
    # Both token maps in fp32 whatever the autocast, as the pipeline picks them: bf16 would move near-tied tokens.
    with torch.no_grad(), torch.autocast(hq.device.type, enabled=False):
        gt_tokens = vqvae.quantize.indices(vqvae.encode(hq.to(vqvae.dtype)).latents)
        lq_tokens = encoder(lq.to(encoder.dtype)).logits.argmax(dim=1)
    terms: dict[str, torch.Tensor] = {}
    images = {}
    for name, tokens in (("restoration", lq_tokens), ("reconstruction", gt_tokens)):
        images[name] = vqvae.render(vqvae.quantize.get_codebook_entry(tokens).detach()).float()
        terms[f"decoder_{name}_l1"] = l1_weight * (images[name] - hq).abs().mean()
        if ssim_weight > 0:
            terms[f"decoder_{name}_ssim"] = ssim_weight * ssim_loss(images[name], hq)
        if perceptual is not None and perceptual_weight > 0:
            terms[f"decoder_{name}_perceptual"] = perceptual_weight * perceptual(images[name], hq)
    total = sum(terms.values())
    terms["token_accuracy"] = (lq_tokens == gt_tokens).float().mean()
    return total, terms, images["restoration"]
