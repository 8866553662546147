"""Turning what users pass (PIL, numpy, torch, lists) into checked RGB tensors in [0, 1], and back.

diffusers' ``VaeImageProcessor`` resizes by default and leaves uint8 numpy unscaled, which is wrong for
super-resolution, so the pipeline converts inputs here: no resizing, explicit ranges, clear errors.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import torch

from ..utils.image_files import image_to_array, to_u8
from .options import OUTPUT_TYPES


def _from_pil(image: PIL.Image.Image) -> torch.Tensor:
    # Grayscale, palette, CMYK and RGBA become RGB; an alpha channel is dropped (iter-sr upscales it separately).
    return torch.from_numpy(image_to_array(image)).permute(2, 0, 1)


def _check_range(tensor: torch.Tensor, what: str) -> None:
    if tensor.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(tensor.shape)})")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    low, high = tensor.min().item(), tensor.max().item()
    if low < 0 or high > 1:
        raise ValueError(f"{what} must hold values in [0, 1], got [{low:.4g}, {high:.4g}]")


def _to_rgb(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """(B, C, H, W) with C in {1, 3, 4} -> (B, 3, H, W)."""
    channels = tensor.shape[1]
    if channels == 1:
        return tensor.expand(-1, 3, -1, -1)
    if channels == 4:
        return tensor[:, :3]
    if channels != 3:
        raise ValueError(f"{what} has {channels} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA)")
    return tensor


def _from_numpy(array: np.ndarray, what: str) -> torch.Tensor:
    if array.dtype == np.uint8:
        tensor = torch.from_numpy(array.astype(np.float32) / 255.0)
    elif array.dtype == np.uint16:
        tensor = torch.from_numpy(array.astype(np.float32) / 65535.0)
    elif np.issubdtype(array.dtype, np.floating):
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    else:
        raise TypeError(f"{what}: numpy arrays must be uint8, uint16 or float in [0, 1], got dtype {array.dtype}")
    if tensor.ndim == 2:
        tensor = tensor[..., None]
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4:
        raise ValueError(f"{what}: numpy arrays must be HW, HWC or BHWC, got shape {array.shape}")
    return tensor.permute(0, 3, 1, 2)


def _from_torch(tensor: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.is_floating_point(tensor):
        raise TypeError(f"{what}: tensors must be floating point in [0, 1], got dtype {tensor.dtype}")
    if tensor.ndim == 3:
        tensor = tensor[None]
    if tensor.ndim != 4:
        raise ValueError(f"{what}: tensors must be CHW or BCHW, got shape {tuple(tensor.shape)}")
    return tensor.detach().float().cpu()


def to_image_tensors(image) -> list[torch.Tensor]:
    """Any supported input -> a list of (3, H, W) float32 CPU tensors in [0, 1], one per image.

    Accepted: PIL images (any mode), numpy uint8 / uint16 / float in [0, 1] (HW, HWC or BHWC), torch float
    tensors in [0, 1] (CHW or BCHW), and lists of these (sizes may differ).
    """
    if image is None:
        raise ValueError("image is required")
    items = image if isinstance(image, (list, tuple)) else [image]
    if len(items) == 0:
        raise ValueError("image is an empty list")
    out = []
    for index, item in enumerate(items):
        what = "image" if len(items) == 1 else f"image[{index}]"
        if isinstance(item, PIL.Image.Image):
            batch = _from_pil(item)[None]
        elif isinstance(item, np.ndarray):
            batch = _from_numpy(item, what)
        elif isinstance(item, torch.Tensor):
            batch = _from_torch(item, what)
        else:
            raise TypeError(
                f"{what} has type {type(item).__name__}; expected a PIL image, a numpy array, a torch tensor "
                "or a list of them"
            )
        batch = _to_rgb(batch, what)
        _check_range(batch, what)
        out.extend(batch.unbind(0))
    return out


def mirror_pad(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Extend (B, C, h, w) to (B, C, height, width) by mirroring that repeats the edge pixel (…cba|abc…).

    The official flip-and-concatenate, repeated as often as needed so that pads larger than the image work.
    """
    while x.shape[2] < height:
        x = torch.cat([x, x.flip(2)], dim=2)
    while x.shape[3] < width:
        x = torch.cat([x, x.flip(3)], dim=3)
    return x[:, :, :height, :width]


def postprocess(images: torch.Tensor, output_type: str):
    """(B, 3, H, W) float in [0, 1] -> ``pt`` (as is), ``np`` (B, H, W, 3) float32 or ``pil`` (list)."""
    if output_type == "pt":
        return images
    array = images.float().cpu().permute(0, 2, 3, 1).numpy()
    if output_type == "np":
        return array
    if output_type == "pil":
        return [PIL.Image.fromarray(to_u8(a)) for a in array]
    raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
