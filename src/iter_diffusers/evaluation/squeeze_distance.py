"""An LPIPS-style perceptual distance on SqueezeNet 1.1 features: a metric and a training loss.

**Not the published LPIPS.** LPIPS-squeeze (Zhang et al., 2018) runs its linear heads on torchvision's SqueezeNet 1.1
ImageNet weights, which cannot be had offline. This distance runs the same heads (the ``lpips`` package's
``weights/v0.1/squeeze.pth``) on the *original Caffe* SqueezeNet 1.1 ImageNet weights, which ncnn ships as an
example (BSD-2-Clause; fetched and converted by :func:`iter_diffusers.offline_weights.squeeze_distance`). The
formula is LPIPS's: per layer, features unit-normalised over channels, squared difference weighted per channel by
the head, mean over space, summed over the 7 layers (after conv1 and after fire3, 5, 6, 7, 8, 9). The input is
prepared the Caffe way (BGR, 0-255, minus the means 104, 117, 123), which is what these weights were trained on.
Values are comparable between methods measured with it, not with published LPIPS figures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SQUEEZE_DISTANCE_NAME", "SQUEEZE_LAYER_CHANNELS", "SqueezeNetFeatures", "SqueezeDistance"]

SQUEEZE_DISTANCE_NAME = "LPIPS-style (SqueezeNet 1.1 Caffe weights + lpips v0.1 squeeze heads; not LPIPS)"
SQUEEZE_LAYER_CHANNELS = (64, 128, 256, 384, 384, 512, 512)
_CAFFE_BGR_MEAN = (104.0, 117.0, 123.0)
# (squeeze, expand) channels of fire2 ... fire9; a ceil-mode 3x3/2 max pool precedes fire2, fire4 and fire6
_FIRES = ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))
_POOL_BEFORE = {2, 4, 6}
_LAYER_AFTER = {3, 5, 6, 7, 8, 9}  # fires whose output is an LPIPS layer (besides conv1's)


class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze, then 1x1 and 3x3 expands concatenated, ReLU after each conv."""

    def __init__(self, in_channels: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], 1)


class SqueezeNetFeatures(nn.Module):
    """SqueezeNet 1.1 up to fire9 (no classifier); ``forward`` returns the 7 LPIPS layers' activations."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2)
        channels, fires = 64, []
        for squeeze, expand in _FIRES:
            fires.append(Fire(channels, squeeze, expand))
            channels = 2 * expand
        self.fires = nn.ModuleList(fires)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu(self.conv1(x))
        layers = [x]
        for number, fire in enumerate(self.fires, start=2):
            if number in _POOL_BEFORE:
                x = F.max_pool2d(x, 3, 2, ceil_mode=True)
            x = fire(x)
            if number in _LAYER_AFTER:
                layers.append(x)
        return layers


class SqueezeDistance(nn.Module):
    """The distance between two (B, 3, H, W) RGB batches in [0, 1]; lower is closer.

    Frozen; gradients flow to the inputs, so it also serves as a perceptual loss (``reduction="mean"``: the batch
    mean; ``"none"``: one value per image, ``(B,)``). ``heads`` are the 7 per-channel weights (C,) of the ``lpips``
    squeeze heads (all ones without calibration).
    """

    def __init__(self, features: SqueezeNetFeatures | None = None, heads: list[torch.Tensor] | None = None,
                 reduction: str = "none"):
        super().__init__()
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.reduction = reduction
        self.features = features if features is not None else SqueezeNetFeatures()
        heads = heads if heads is not None else [torch.ones(c) for c in SQUEEZE_LAYER_CHANNELS]
        if [h.numel() for h in heads] != list(SQUEEZE_LAYER_CHANNELS):
            raise ValueError(f"heads need {SQUEEZE_LAYER_CHANNELS} channels, got {[h.numel() for h in heads]}")
        for i, head in enumerate(heads):
            self.register_buffer(f"head{i}", head.float().view(1, -1, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always in inference mode

    def _caffe_input(self, rgb: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(_CAFFE_BGR_MEAN, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
        return rgb.flip(1) * 255.0 - mean

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B, 3, H, W)")
        batch = pred.shape[0]
        layers = self.features(self._caffe_input(torch.cat([pred, target])))
        total = pred.new_zeros(batch)
        for i, layer in enumerate(layers):
            unit = layer / (layer.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            diff = (unit[:batch] - unit[batch:]).pow(2) * getattr(self, f"head{i}").to(layer.dtype)
            total = total + diff.sum(dim=1).mean(dim=(1, 2))
        return total.mean() if self.reduction == "mean" else total
