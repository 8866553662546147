"""Colour and low-frequency correction of a restored image from its input (StableSR's colour fix).

A generative restorer renders detail from its codebook; the low frequencies (colour, brightness, shading) are
better known from the input itself. Both fixes compare the restoration with the input upsampled to the same
size (bicubic) and take from the input what it knows:

* ``"wavelet"``: the band below a cut-off comes from the input, the band above it from the restoration. The
  split is an à trous wavelet decomposition (a 3×3 binomial blur dilated 1, 2, 4, … pixels): after ``levels``
  blurs the low band holds periods longer than about 2^(levels+1) output pixels. ``levels = log2(s)`` puts the
  cut-off at the input's own Nyquist frequency, so everything the input measured is kept and only the detail
  it could not hold comes from the codebook; StableSR uses 5.
* ``"adain"``: the per-channel mean and standard deviation of the restoration are matched to the input's
  (a global colour transfer; the spatial layout of the restoration is kept).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .options import COLOR_FIXES


def upsample_reference(lq: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The input (B, 3, h, w) in [0, 1] resized (bicubic) to (height, width): what the fixes compare with."""
    return F.interpolate(lq.float(), size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def _binomial_blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    """3×3 binomial ([1, 2, 1] ⊗ [1, 2, 1] / 16) blur with taps ``dilation`` pixels apart, edges replicated."""
    taps = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype, device=image.device) / 4
    kernel = (taps[:, None] * taps[None, :]).expand(image.shape[1], 1, 3, 3)
    # Replicate padding needs a pad smaller than the image; mirror the edge row/column enough times instead.
    height, width = image.shape[-2:]
    if dilation >= min(height, width):
        rows = torch.arange(-dilation, height + dilation, device=image.device).clamp(0, height - 1)
        cols = torch.arange(-dilation, width + dilation, device=image.device).clamp(0, width - 1)
        padded = image[..., rows[:, None], cols[None, :]]
    else:
        padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, dilation=dilation, groups=image.shape[1])


def wavelet_low_band(image: torch.Tensor, levels: int) -> torch.Tensor:
    """The low band of ``image`` after ``levels`` à trous blurs (dilations 1, 2, …, 2^(levels−1))."""
    for level in range(levels):
        image = _binomial_blur(image, 2**level)
    return image


def wavelet_color_fix(restored: torch.Tensor, reference: torch.Tensor, levels: int) -> torch.Tensor:
    """``restored``'s band above the cut-off on ``reference``'s band below it (both (B, 3, H, W) in [0, 1])."""
    if levels < 1:
        raise ValueError(f"color_fix_levels must be >= 1, got {levels}")
    restored = restored.float()
    out = restored - wavelet_low_band(restored, levels)
    out += wavelet_low_band(reference.float(), levels)
    return out.clamp_(0, 1)


def adain_color_fix(restored: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``restored`` with each channel's mean and standard deviation set to ``reference``'s."""
    restored, reference = restored.float(), reference.float()
    mean, std = restored.mean((2, 3), keepdim=True), restored.std((2, 3), keepdim=True)
    ref_mean, ref_std = reference.mean((2, 3), keepdim=True), reference.std((2, 3), keepdim=True)
    return ((restored - mean) / (std + eps) * ref_std + ref_mean).clamp_(0, 1)


def apply_color_fix(restored: torch.Tensor, lq: torch.Tensor, method: str | None, levels: int) -> torch.Tensor:
    """Apply ``method`` (one of :data:`COLOR_FIXES`, or None for no change) to ``restored`` given its input."""
    if method is None:
        return restored
    reference = upsample_reference(lq.to(restored.device), *restored.shape[-2:])
    if method == "wavelet":
        return wavelet_color_fix(restored, reference, levels)
    if method == "adain":
        return adain_color_fix(restored, reference)
    raise ValueError(f"color_fix must be one of {COLOR_FIXES} or None, got {method!r}")
