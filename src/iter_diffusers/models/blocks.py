"""Convolutional building blocks of the ITER networks (residual blocks, resampling, normalisation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """The VQGAN's GroupNorm (eps 1e-6): ``num_groups`` groups (official 32), or channels // 4 below 32 channels.

    Groups of a single channel act as instance norm and erase each channel's mean, i.e. the image's global colour
    and brightness; narrow models therefore need fewer groups than the official 32.
    """
    return nn.GroupNorm(num_groups if channels >= 32 else channels // 4, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """Pre-activation residual block of the VQGAN: GN → swish → conv3×3, twice; 1×1 shortcut when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, norm_num_groups: int = 32):
        super().__init__()
        self.norm1 = group_norm(in_channels, norm_num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, norm_num_groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return h + shortcut


class Downsample(nn.Module):
    """Stride-2 3×3 conv after a one-pixel zero pad on the right and bottom (taming-transformers style)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour ×2 followed by a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class LeakyResnetBlock(nn.Module):
    """E_l's residual block: GN(32 groups) → LeakyReLU(0.2) → conv3×3, twice, identity shortcut."""

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
