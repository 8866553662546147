"""Shifted-window (Swin) transformer layers shared by every ITER network.

ITER uses one flavour of SwinIR's residual Swin transformer block (RSTB) everywhere: in the VQGAN encoder and
decoder, in the distortion-removal encoder E_l and in both token networks φ_e and φ_r. Two details differ from
the textbook Swin block and matter for parity with the official checkpoints:

* the MLP carries a squeeze-and-excitation gate whose pooling averages over **all** tokens of the feature map
  (not per window), so outputs depend on the whole image, its padding and its tiling;
* the shifted-window mask fills cross-region pairs with -100 (not -inf).

Attention runs through ``F.scaled_dot_product_attention`` with the relative-position bias (and the shift mask)
as an additive float mask, which is numerically equal to the explicit softmax(QKᵀ·s + B)V of the original.

:class:`WindowAttention` is timm's ``swin_transformer.WindowAttention`` (same keys, same computation), written out
because timm cannot be a dependency: its wheel requires torchvision (timm 1.0.31: ``Requires-Dist: torch,
torchvision, pyyaml, huggingface_hub, safetensors``), and PyPI's torchvision for torch 2.13 (0.28.0, ``torch
==2.13.0``) does not import beside the CPU build of torch this project uses ("operator torchvision::nms does not
exist").
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B·nW, window_size², C), windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_merge(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B·nW, window_size², C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window_size, width // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into the (2w−1)² relative-position table for every (query, key) pair of a window, (w², w²) int64."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return relative[..., 0] * (2 * window_size - 1) + relative[..., 1]


def shifted_window_mask(height: int, width: int, window_size: int, shift: int,
                        device: torch.device | None = None) -> torch.Tensor:
    """Additive mask (nW, w², w²) that keeps shifted windows from attending across the wrapped-around border.

    Cached per size and device (callers must not modify it in place); built afresh inside ``torch.compile``,
    where it becomes a constant of the graph.
    """
    build = _build_shifted_window_mask.__wrapped__ if torch.compiler.is_compiling() else _build_shifted_window_mask
    return build(height, width, window_size, shift, torch.device("cpu") if device is None else torch.device(device))


@lru_cache(maxsize=64)
def _build_shifted_window_mask(height: int, width: int, window_size: int, shift: int,
                               device: torch.device) -> torch.Tensor:
    region = torch.zeros(1, height, width, 1)
    bounds = (slice(0, -window_size), slice(-window_size, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            region[:, rows, cols, :] = label
            label += 1
    region_windows = window_partition(region, window_size).squeeze(-1)
    different = region_windows.unsqueeze(1) != region_windows.unsqueeze(2)
    return torch.zeros(different.shape).masked_fill(different, -100.0).to(device)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside (shifted) windows with a learned relative-position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Recomputed, never stored: the official checkpoints carry it, the converter checks it equals this.
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, windows: torch.Tensor, shift_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch_windows, n, dim = windows.shape
        q, k, v = self.qkv(windows).view(batch_windows, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias().to(q.dtype).unsqueeze(0)  # (1, heads, n, n)
        if shift_mask is not None:
            num_windows = shift_mask.shape[0]
            bias = bias + shift_mask.to(q.dtype).unsqueeze(1)  # (nW, heads, n, n)
            bias = bias.repeat(batch_windows // num_windows, 1, 1, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(batch_windows, n, dim))


class GatedMlp(nn.Module):
    """GELU MLP whose hidden features are gated by a squeeze-and-excitation over all tokens of the image."""

    def __init__(self, dim: int, hidden_dim: int, se_reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.gate = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim // se_reduction),
            nn.SiLU(),
            nn.Linear(hidden_dim // se_reduction, hidden_dim),
            nn.Sigmoid(),
        )
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.fc1(tokens))
        hidden = hidden * self.gate(hidden.mean(dim=1, keepdim=True))
        return self.fc2(hidden)


class SwinBlock(nn.Module):
    """Pre-norm Swin transformer block; ``shift`` > 0 makes it a shifted-window block."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GatedMlp(dim, int(dim * mlp_ratio))

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, _, dim = tokens.shape
        x = self.norm1(tokens).view(batch, height, width, dim)
        shift_mask = None
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            shift_mask = shifted_window_mask(height, width, self.window_size, self.shift, x.device)
        x = self.attn(window_partition(x, self.window_size), shift_mask)
        x = window_merge(x, self.window_size, height, width)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        tokens = tokens + x.reshape(batch, height * width, dim)
        return tokens + self.mlp(self.norm2(tokens))


class ResidualSwinGroup(nn.Module):
    """SwinIR's RSTB: ``depth`` blocks alternating plain and shifted windows (plain only without
    ``shift_windows``), a 3×3 conv, and a long skip."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float = 4.0,
                 shift_windows: bool = True):
        super().__init__()
        shift = window_size // 2 if shift_windows else 0
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, shift=0 if i % 2 == 0 else shift, mlp_ratio=mlp_ratio)
            for i in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)
        self.gradient_checkpointing = False

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = tokens
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, height, width)
            else:
                x = block(x, height, width)
        batch, _, dim = x.shape
        x = self.conv(x.transpose(1, 2).reshape(batch, dim, height, width))
        return x.flatten(2).transpose(1, 2) + tokens


class SwinLayers(nn.Module):
    """Conv-wrapped stack of residual Swin groups on a (B, C, H, W) map: conv3×3 → groups → conv3×3, plus a skip.

    H and W must be multiples of ``window_size``. ``shift_windows=False`` makes every block a plain-window block:
    SwinIR does that (and clamps the window to the map) when its configured map is no larger than the window.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        num_groups: int,
        depth: int,
        num_heads: int = 8,
        window_size: int = 8,
        mlp_ratio: float = 4.0,
        shift_windows: bool = True,
    ):
        super().__init__()
        self.window_size = window_size
        self.conv_in = nn.Conv2d(in_channels, dim, 3, padding=1)
        self.groups = nn.ModuleList(
            ResidualSwinGroup(dim, depth, num_heads, window_size, mlp_ratio, shift_windows) for _ in range(num_groups)
        )
        self.conv_out = nn.Conv2d(dim, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        if height % self.window_size or width % self.window_size:
            raise ValueError(
                f"Swin layers need a feature map whose sides are multiples of the window size {self.window_size}, "
                f"got {height}x{width}"
            )
        h = self.conv_in(x)
        tokens = h.flatten(2).transpose(1, 2)
        for group in self.groups:
            tokens = group(tokens, height, width)
        h = tokens.transpose(1, 2).reshape(batch, -1, height, width)
        return self.conv_out(h) + x
