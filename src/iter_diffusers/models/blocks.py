"""Convolutional building blocks of the ITER networks (residual blocks, resampling, normalisation).

The VQGAN's residual blocks and ×2 resamplers are diffusers' own (:func:`resnet_block`, :func:`downsample`,
:func:`upsample` configure them): the same computation, key for key, as the official (taming-transformers) blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn


def norm_groups(channels: int, num_groups: int = 32) -> int:
    """GroupNorm groups of a ``channels``-wide VQGAN layer: ``num_groups`` (official 32), or channels // 4 below 32.

    Groups of a single channel act as instance norm and erase each channel's mean, i.e. the image's global colour
    and brightness; narrow models therefore need fewer groups than the official 32.
    """
    return num_groups if channels >= 32 else channels // 4


def group_norm(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """The VQGAN's GroupNorm: eps 1e-6, :func:`norm_groups` groups."""
    return nn.GroupNorm(norm_groups(channels, num_groups), channels, eps=1e-6)


def resnet_block(in_channels: int, out_channels: int, norm_num_groups: int = 32) -> ResnetBlock2D:
    """The VQGAN's pre-activation residual block: GN → swish → conv3×3, twice; 1×1 ``conv_shortcut`` when widths
    differ. diffusers' ``ResnetBlock2D`` without time embedding; call it as ``block(x, None)``."""
    return ResnetBlock2D(
        in_channels=in_channels,
        out_channels=out_channels,
        temb_channels=None,
        groups=norm_groups(in_channels, norm_num_groups),
        groups_out=norm_groups(out_channels, norm_num_groups),
        eps=1e-6,
        dropout=0.0,
        non_linearity="swish",
        output_scale_factor=1.0,
    )


def downsample(channels: int) -> Downsample2D:
    """Stride-2 3×3 conv after a one-pixel zero pad on the right and bottom (taming-transformers style): diffusers'
    ``Downsample2D`` with ``padding=0``; ``name="op"`` keeps its one conv under the key ``conv`` (the default name
    also registers it as ``Conv2d_0``, a second set of keys)."""
    return Downsample2D(channels, use_conv=True, out_channels=channels, padding=0, name="op")


def upsample(channels: int) -> Upsample2D:
    """Nearest-neighbour ×2 followed by a 3×3 conv: diffusers' ``Upsample2D`` with its conv."""
    return Upsample2D(channels, use_conv=True, out_channels=channels)


class LeakyResnetBlock(nn.Module):
    """E_l's residual block: GN(32 groups) → LeakyReLU(0.2) → conv3×3, twice, identity shortcut.

    Ours, not diffusers' ``ResnetBlock2D``: its ``non_linearity`` (``get_activation``) has no LeakyReLU.
    """

    def __init__(self, channels: int, norm_num_groups: int = 32):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        h = self.conv2(F.leaky_relu(self.norm2(h), 0.2))
        return h + x
