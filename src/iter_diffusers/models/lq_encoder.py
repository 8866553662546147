"""E_l, ITER's distortion-removal encoder: low-quality image -> logits over the HQ codebook."""

from __future__ import annotations

import math

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from .blocks import LeakyResnetBlock
from .outputs import ITERLogitsOutput
from .swin import SwinLayers


class _StridedStage(nn.Module):
    """Stride-2 conv doubling the width, then residual blocks."""

    def __init__(self, in_channels: int, num_blocks: int, norm_num_groups: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels * 2, 3, stride=2, padding=1)
        self.resnets = nn.ModuleList(LeakyResnetBlock(in_channels * 2, norm_num_groups) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        for resnet in self.resnets:
            x = resnet(x)
        return x


class TokenGridMixin:
    """The token grid of an E_l, from its config: what the pipeline pads and tiles by (either E_l design)."""

    @property
    def pixels_per_token(self) -> int:
        """LQ pixels per token along each side."""
        return self.config.vq_scale_factor // self.config.scale_factor

    @property
    def pad_multiple(self) -> int:
        """E_l's own requirement: LQ sides must be multiples of this, one Swin window of tokens (x4: 16 px, x2:
        32 px). The pipeline pads to a multiple of it that every network accepts (``ITERPipeline.pad_multiple``)."""
        return self.pixels_per_token * self.config.swin_window_size


class ITERDistortionRemovalEncoder(TokenGridMixin, ModelMixin, ConfigMixin):
    r"""E_l: maps an LQ image in [0, 1] to codebook logits at the token resolution of the HQ VQGAN.

    One token covers ``vq_scale_factor / scale_factor`` LQ pixels (x4: 2, x2: 4), reached by that many
    stride-2 stages; Swin layers at token resolution then remove distortions globally. The LQ image's sides
    must be multiples of ``vq_scale_factor // scale_factor · swin_window_size`` pixels (the pipeline pads).

    Parameters:
        scale_factor (`int`, defaults to 4): the super-resolution factor s (2 or 4 in the official release). It
            lives here only.
        vq_scale_factor (`int`, defaults to 8): HQ pixels per token of the VQGAN.
        in_channels (`int`, defaults to 3): channels of the LQ images.
        base_channels (`int`, defaults to 64): width after the first conv, doubled by each stride-2 stage.
        blocks_per_stage (`int`, defaults to 2): residual blocks after each stride-2 conv.
        feature_dim (`int`, defaults to 128): width of the Swin layers (the codebook vector width).
        swin_num_groups (`int`, defaults to 2): residual Swin groups.
        swin_depth (`int`, defaults to 6): Swin blocks per group.
        swin_num_heads (`int`, defaults to 8): attention heads.
        swin_window_size (`int`, defaults to 8): attention window side, in tokens.
        mlp_ratio (`float`, defaults to 4.0): Swin MLP width ratio.
        num_vq_embeddings (`int`, defaults to 512): codebook size K.
        norm_num_groups (`int`, defaults to 32): GroupNorm groups of the residual blocks.

    The defaults are the official x4 model's sizes.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["SwinLayers"]

    @register_to_config
    def __init__(
        self, scale_factor: int = 4, vq_scale_factor: int = 8,  # s, and the VQGAN's pixels per token
        in_channels: int = 3,
        base_channels: int = 64, blocks_per_stage: int = 2,  # the residual downsampling stages
        feature_dim: int = 128,
        # the Swin trunk
        swin_num_groups: int = 2, swin_depth: int = 6, swin_num_heads: int = 8,
        swin_window_size: int = 8, mlp_ratio: float = 4.0,
        num_vq_embeddings: int = 512,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        ratio = vq_scale_factor // scale_factor
        if ratio < 1 or vq_scale_factor % scale_factor or ratio & (ratio - 1):
            raise ValueError(
                f"scale_factor {scale_factor} must divide vq_scale_factor {vq_scale_factor} by a power of two"
            )
        num_stages = int(math.log2(ratio))
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList(
            _StridedStage(base_channels * 2**i, blocks_per_stage, norm_num_groups) for i in range(num_stages)
        )
        self.proj_in = nn.Conv2d(base_channels * 2**num_stages, feature_dim, 1)
        self.swin = SwinLayers(
            feature_dim, feature_dim, swin_num_groups, swin_depth, swin_num_heads, swin_window_size, mlp_ratio
        )
        self.conv_out = nn.Conv2d(feature_dim, num_vq_embeddings, 1)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        """LQ image (B, 3, H, W) in [0, 1] -> codebook logits (B, K, H/p, W/p), p = :attr:`pixels_per_token`."""
        x = self.conv_in(sample)
        for stage in self.down:
            x = stage(x)
        logits = self.conv_out(self.swin(self.proj_in(x)))
        return ITERLogitsOutput(logits=logits) if return_dict else (logits,)
