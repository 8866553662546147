"""The stage-I adversary: Real-ESRGAN's U-Net discriminator with spectral norm, as a diffusers model.

Training only (``examples/train_iter.py`` saves it under ``discriminator/`` in its checkpoints); no pipeline uses
it. ``forward`` returns the realness map as a plain tensor rather than a ``BaseOutput``: its only consumers are
the hinge losses, and the saved checkpoints do not depend on the return type either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.nn.utils import spectral_norm


class UNetDiscriminatorSN(ModelMixin, ConfigMixin):
    """Real-ESRGAN's U-Net discriminator with spectral normalisation: a per-pixel realness map ``(B, 1, H, W)``.

    Three stride-2 4x4 convs (64 -> 128 -> 256 -> 512 channels for ``num_feat=64``), three bilinear x2 upsamplings
    each followed by a 3x3 conv (with additive U-Net skips when ``skip_connection``), two extra 3x3 convs and a
    1-channel head; LeakyReLU(0.2) everywhere; spectral norm on all convs except the first and the last. Module
    names (``conv0`` ... ``conv9``, ``weight_orig``/``weight_u``/``weight_v``) follow basicsr, so Real-ESRGAN
    discriminator checkpoints load directly. H and W must be multiples of 8.

    Args:
        num_in_ch (`int`, defaults to 3): channels of the input images.
        num_feat (`int`, defaults to 64): channels of the first conv; the deepest has eight times as many.
        skip_connection (`bool`, defaults to `True`): add the encoder features to the decoder's (U-Net skips).
    """

    @register_to_config
    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        f = num_feat

        def sn_conv(cin: int, cout: int, kernel: int, stride: int) -> nn.Module:
            return spectral_norm(nn.Conv2d(cin, cout, kernel, stride, 1, bias=False))

        self.conv0 = nn.Conv2d(num_in_ch, f, 3, 1, 1)
        self.conv1 = sn_conv(f, 2 * f, 4, 2)
        self.conv2 = sn_conv(2 * f, 4 * f, 4, 2)
        self.conv3 = sn_conv(4 * f, 8 * f, 4, 2)
        self.conv4 = sn_conv(8 * f, 4 * f, 3, 1)
        self.conv5 = sn_conv(4 * f, 2 * f, 3, 1)
        self.conv6 = sn_conv(2 * f, f, 3, 1)
        self.conv7 = sn_conv(f, f, 3, 1)
        self.conv8 = sn_conv(f, f, 3, 1)
        self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Realness logits ``(B, 1, H, W)`` of images ``x`` ``(B, C, H, W)``."""
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise ValueError(f"UNetDiscriminatorSN needs H and W divisible by 8, got {tuple(x.shape[-2:])}")

        def act(t: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(t, 0.2)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        skip = self.config.skip_connection
        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3)))
        x4 = x4 + x2 if skip else x4
        x5 = act(self.conv5(up(x4)))
        x5 = x5 + x1 if skip else x5
        x6 = act(self.conv6(up(x5)))
        x6 = x6 + x0 if skip else x6
        out = act(self.conv8(act(self.conv7(x6))))
        return self.conv9(out)
