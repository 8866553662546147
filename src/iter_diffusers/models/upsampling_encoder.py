"""E_l built on the HQ VQGAN's own encoder: a distortion-removal encoder that starts from the HQ prior.

The official E_l (:class:`~.lq_encoder.ITERDistortionRemovalEncoder`) learns LQ pixels -> tokens from scratch, which
needs far more training than a CPU budget gives: on the demo data, one trained for 5000 steps rendered the tuning
photos at 19 dB, while the demo VQGAN re-encoding their bicubic upscales gives 27 dB. This E_l resizes the LQ image
by s (bicubic), encodes it with the VQGAN encoder's architecture and scores every latent z against the K codebook
vectors e_k with a 1×1 head. :meth:`ITERUpsamplingEncoder.from_vqgan` copies the trained VQGAN encoder and sets the
head to −‖z − e_k‖² / τ (up to a per-position constant), so that before any training S_l is the VQGAN's own
tokenisation of the bicubic upscale. Training then teaches it what the bicubic image lacks: the demo regresses its
latents onto the VQGAN's latents of the HQ image (``--encoder_latent_weight``), which keeps the head's meaning. The
token cross-entropy was measured to drift it towards a few central codes instead (tuning photos: 7.7 % -> 3.6 %
right tokens and −2 to −4 dB within 500 steps). It is an ITER E_l all the same: LQ image in, codebook logits out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .lq_encoder import TokenGridMixin
from .outputs import ITERLatentLogitsOutput
from .vqgan import ITERVQModel, SwinVQEncoder

#: Config entries shared with :class:`~.vqgan.ITERVQModel` (they define the encoder architecture).
_VQGAN_ENCODER_KEYS = (
    "in_channels", "base_channels", "channel_multipliers", "layers_per_block", "latent_channels",
    "num_vq_embeddings", "swin_dim", "swin_num_groups", "swin_depth", "swin_num_heads", "swin_window_size",
    "mlp_ratio", "swin_shift_windows", "norm_num_groups",
)


class ITERUpsamplingEncoder(TokenGridMixin, ModelMixin, ConfigMixin):
    r"""E_l: LQ image in [0, 1] -> codebook logits, by encoding its bicubic ×s upscale like an HQ image.

    One token covers ``vq_scale_factor / scale_factor`` LQ pixels, as with the official E_l, so the pipeline,
    φ_e and φ_r are unchanged. Parameters other than ``scale_factor`` and ``vq_scale_factor`` are those of
    :class:`~.vqgan.ITERVQModel` (build it with :meth:`from_vqgan`).

    Parameters:
        scale_factor (`int`, defaults to 4): the super-resolution factor s.
        vq_scale_factor (`int`, defaults to 8): HQ pixels per token; must equal ``2 ** (len(channel_multipliers)
            - 1)``.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ResnetBlock2D", "SwinLayers"]

    @register_to_config
    def __init__(
        self, scale_factor: int = 4, vq_scale_factor: int = 8,  # s, and the VQGAN's pixels per token
        in_channels: int = 3,
        base_channels: int = 128, channel_multipliers: tuple[int, ...] = (1, 2, 2, 4), layers_per_block: int = 2,
        latent_channels: int = 128, num_vq_embeddings: int = 512,
        # the Swin trunk
        swin_dim: int = 256, swin_num_groups: int = 1, swin_depth: int = 6, swin_num_heads: int = 8,
        swin_window_size: int = 8, mlp_ratio: float = 4.0, swin_shift_windows: bool = True,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        if vq_scale_factor != 2 ** (len(channel_multipliers) - 1):
            raise ValueError(f"vq_scale_factor {vq_scale_factor} does not match the {len(channel_multipliers) - 1} "
                             f"×2 downsamplings of channel_multipliers {tuple(channel_multipliers)}")
        if vq_scale_factor % scale_factor:
            raise ValueError(f"scale_factor {scale_factor} must divide vq_scale_factor {vq_scale_factor}")
        swin_kwargs = dict(dim=swin_dim, num_groups=swin_num_groups, depth=swin_depth, num_heads=swin_num_heads,
                           window_size=swin_window_size, mlp_ratio=mlp_ratio, shift_windows=swin_shift_windows)
        self.encoder = SwinVQEncoder(in_channels, latent_channels, base_channels, tuple(channel_multipliers),
                                     layers_per_block, swin_kwargs, norm_num_groups)
        self.head = nn.Conv2d(latent_channels, num_vq_embeddings, 1)

    @classmethod
    def from_vqgan(cls, vqvae: ITERVQModel, scale_factor: int, temperature: float = 1.0) -> ITERUpsamplingEncoder:
        """E_l initialised from a trained VQGAN: its encoder's weights, and a head scoring −‖z − e_k‖² / τ.

        ‖z − e_k‖² = ‖z‖² − 2 z·e_k + ‖e_k‖², and ‖z‖² is the same for every k, so the 1×1 conv with weights
        2 e_k / τ and biases −‖e_k‖² / τ gives the same softmax; its argmax is the VQGAN's nearest code.
        ``temperature`` (τ) sets how sharp that first softmax is.
        """
        config = {key: vqvae.config[key] for key in _VQGAN_ENCODER_KEYS}
        model = cls(scale_factor=scale_factor, vq_scale_factor=vqvae.scale_factor, **config)
        model.encoder.load_state_dict(vqvae.encoder.state_dict())
        codebook = vqvae.quantize.embedding.weight.detach().float()
        with torch.no_grad():
            model.head.weight.copy_((2 * codebook / temperature)[:, :, None, None])
            model.head.bias.copy_(-(codebook**2).sum(1) / temperature)
        return model

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        """LQ image (B, 3, H, W) in [0, 1] -> codebook logits (B, K, H/p, W/p), p = :attr:`pixels_per_token`, and
        the latents they score: E_l's estimate of the VQGAN latents of the HQ image (the tuple has both, in the
        output's field order)."""
        upscaled = F.interpolate(sample, scale_factor=self.config.scale_factor, mode="bicubic", align_corners=False)
        latents = self.encoder(upscaled.clamp(0, 1) * 2 - 1)
        logits = self.head(latents)
        return ITERLatentLogitsOutput(logits=logits, latents=latents) if return_dict else (logits, latents)
