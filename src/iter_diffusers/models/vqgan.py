"""The HQ prior: ITER's Swin-VQGAN, with the surface of diffusers' ``VQModel``.

The encoder maps an image in [0, 1] to latents at 1/8 resolution; the quantizer snaps each latent to the
nearest of ``num_vq_embeddings`` codebook vectors; the decoder renders codebook vectors back to pixels. ITER
inference uses only the codebook and the decoder; the encoder makes ground-truth tokens during training.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.autoencoders.vae import VectorQuantizer as DiffusersVectorQuantizer
from diffusers.models.autoencoders.vq_model import VQEncoderOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from .blocks import downsample, group_norm, resnet_block, upsample
from .swin import SwinLayers


class VectorQuantizer(DiffusersVectorQuantizer):
    """Nearest-neighbour codebook lookup with the straight-through estimator: diffusers' ``VectorQuantizer``
    (``sane_index_shape``, no remap), with the code search in fp32.

    The returned loss is taming-transformers' *legacy* VQ loss, ``‖sg(z_q) − z‖² + β‖z_q − sg(z)‖²``, where β
    multiplies the codebook term rather than the commitment term; the official ITER VQGAN was trained with it.
    ``legacy=False`` gives the textbook placement.

    Args:
        num_embeddings (`int`): codebook size K.
        embed_dim (`int`): width of every codebook vector.
        beta (`float`, defaults to 0.25): weight of the second term of the loss.
        legacy (`bool`, defaults to `True`): the legacy placement of ``beta``.
    """

    def __init__(self, num_embeddings: int, embed_dim: int, beta: float = 0.25, legacy: bool = True):
        super().__init__(num_embeddings, embed_dim, beta, sane_index_shape=True, legacy=legacy)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Codebook index of every latent vector of ``z`` (B, C, h, w) -> (B, h, w) int64."""
        # In fp32 whatever the model dtype or autocast: in bf16/fp16 near-equal distances swap, and the tokens
        # (ITER's ground truth in training, S_l's meaning at inference) would depend on the precision.
        with torch.autocast(z.device.type, enabled=False):
            flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float()
            codebook = self.embedding.weight.float()
            distances = (flat**2).sum(1, keepdim=True) + (codebook**2).sum(1) - 2 * flat @ codebook.t()
        return distances.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def forward(self, z: torch.Tensor):
        """Returns ``(z_q, loss, (None, None, indices))`` like diffusers' quantizer, with indices (B, h, w)."""
        # Overridden for the search only: diffusers' takes torch.cdist in the latents' dtype; ours is :meth:`indices`.
        indices = self.indices(z)
        z_q = self.get_codebook_entry(indices)
        codebook_term = torch.mean((z_q - z.detach()) ** 2)
        commitment_term = torch.mean((z_q.detach() - z) ** 2)
        if self.legacy:
            loss = commitment_term + self.beta * codebook_term
        else:
            loss = self.beta * commitment_term + codebook_term
        z_q = z + (z_q - z).detach()
        return z_q, loss, (None, None, indices)

    def get_codebook_entry(self, indices: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Codebook vectors for ``indices``: (B, h, w), or flat with ``shape=(B, h, w, C)``; returns (B, C, h, w)."""
        # diffusers' requires ``shape`` (without it, it returns (..., C) unpermuted): default to the indices' grid.
        return super().get_codebook_entry(indices, (*indices.shape, self.vq_embed_dim) if shape is None else shape)

    def embed_probabilities(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Expected codebook vector under per-position code probabilities (B, K, h, w) -> (B, C, h, w).

        With a hard one-hot (e.g. straight-through Gumbel-softmax) this equals the lookup and lets gradients
        reach whatever produced the probabilities.
        """
        codebook = self.embedding.weight.to(probabilities.dtype)
        return torch.einsum("bkhw,kc->bchw", probabilities, codebook)


class _Checkpointable(nn.Module):
    """Runs a list of stages, with activation checkpointing when the owning model enables it."""

    def __init__(self):
        super().__init__()
        self.gradient_checkpointing = False

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(module, x)
        return module(x)


class _ResnetStage(nn.Module):
    """One resolution level: residual blocks, then an optional ×2 resampling (``"down"`` or ``"up"``).

    The resampler's attribute name (``downsample`` / ``upsample``) is part of the saved weights' keys (diffusers'
    ``DownEncoderBlock2D``/``UpDecoderBlock2D`` would store it as ``downsamplers.0`` / ``upsamplers.0``).
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, norm_num_groups: int,
                 resample: str | None = None):
        super().__init__()
        widths = [in_channels] + [out_channels] * num_layers
        self.resnets = nn.ModuleList(resnet_block(a, b, norm_num_groups) for a, b in zip(widths[:-1], widths[1:]))
        self.downsample = downsample(out_channels) if resample == "down" else None
        self.upsample = upsample(out_channels) if resample == "up" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x, None)
        for resampler in (self.downsample, self.upsample):
            if resampler is not None:
                x = resampler(x)
        return x


class _MidBlock(nn.Module):
    """ResnetBlock → Swin layers → ResnetBlock at the lowest resolution: the VQGAN's global context."""

    def __init__(self, channels: int, swin_kwargs: dict, norm_num_groups: int):
        super().__init__()
        self.resnet_in = resnet_block(channels, channels, norm_num_groups)
        self.swin = SwinLayers(channels, **swin_kwargs)
        self.resnet_out = resnet_block(channels, channels, norm_num_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet_out(self.swin(self.resnet_in(x, None)), None)


class SwinVQEncoder(_Checkpointable):
    def __init__(self, in_channels, latent_channels, base_channels, channel_multipliers, layers_per_block, swin_kwargs,
                 norm_num_groups):
        super().__init__()
        widths = [base_channels * m for m in channel_multipliers]
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList(
            _ResnetStage(c_in, c_out, layers_per_block, norm_num_groups, "down" if i < len(widths) - 1 else None)
            for i, (c_in, c_out) in enumerate(zip([base_channels] + widths[:-1], widths))
        )
        self.mid = _MidBlock(widths[-1], swin_kwargs, norm_num_groups)
        self.norm_out = group_norm(widths[-1], norm_num_groups)
        self.conv_out = nn.Conv2d(widths[-1], latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for stage in self.down:
            x = self._run(stage, x)
        x = self._run(self.mid, x)
        return self.conv_out(self.norm_out(x))


class SwinVQDecoder(_Checkpointable):
    def __init__(self, out_channels, latent_channels, base_channels, channel_multipliers, layers_per_block, swin_kwargs,
                 norm_num_groups):
        super().__init__()
        widths = [base_channels * m for m in reversed(channel_multipliers)]
        self.conv_in = nn.Conv2d(latent_channels, widths[0], 3, padding=1)
        self.mid = _MidBlock(widths[0], swin_kwargs, norm_num_groups)
        self.up = nn.ModuleList(
            _ResnetStage(c_in, c_out, layers_per_block, norm_num_groups, "up" if i < len(widths) - 1 else None)
            for i, (c_in, c_out) in enumerate(zip(widths[:1] + widths[:-1], widths))
        )
        self.norm_out = group_norm(widths[-1], norm_num_groups)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self._run(self.mid, self.conv_in(z))
        for stage in self.up:
            x = self._run(stage, x)
        return self.conv_out(self.norm_out(x))


class ITERVQModel(ModelMixin, ConfigMixin):
    r"""ITER's Swin-VQGAN (the frozen HQ codebook prior and its decoder).

    Images are RGB in **[0, 1]**: ``encode`` clamps and maps them to [-1, 1] itself and ``decode`` maps back and
    clamps, as the official model does. Spatial sizes must be multiples of ``scale_factor · swin_window_size``
    pixels for ``encode`` and of ``swin_window_size`` tokens for ``decode`` (the Swin windows do not pad).

    Parameters:
        in_channels (`int`, defaults to 3): channels of the input images.
        out_channels (`int`, defaults to 3): channels of the decoded images.
        base_channels (`int`, defaults to 128): width of the first level (official ``nf``).
        channel_multipliers (`tuple[int, ...]`, defaults to `(1, 2, 2, 4)`): width multiplier per level; ``len - 1``
            ×2 resamplings (×8 officially).
        layers_per_block (`int`, defaults to 2): residual blocks per level.
        latent_channels (`int`, defaults to 128): width of the latents and of every codebook vector.
        num_vq_embeddings (`int`, defaults to 512): codebook size K.
        swin_dim (`int`, defaults to 256): width of the Swin layers at the lowest resolution of encoder and decoder.
        swin_num_groups (`int`, defaults to 1): residual Swin groups there.
        swin_depth (`int`, defaults to 6): Swin blocks per group.
        swin_num_heads (`int`, defaults to 8): attention heads.
        swin_window_size (`int`, defaults to 8): attention window side, in latent pixels.
        mlp_ratio (`float`, defaults to 4.0): Swin MLP width ratio.
        swin_shift_windows (`bool`, defaults to `True`): alternate plain and shifted windows. The official VQGAN
            has none shifted when its configured Swin map (``resolution / scale_factor``) is no larger than its
            window, which SwinIR then clamps to the map side: the converter reads both off the checkpoint.
        commitment_beta (`float`, defaults to 0.25): β of the VQ loss (training only), see :class:`VectorQuantizer`.
        legacy_vq_loss (`bool`, defaults to `True`): β on the codebook term, as the official VQGAN was trained.
        norm_num_groups (`int`, defaults to 32): GroupNorm groups of layers with ≥ 32 channels. Keep at least 4
            channels per group: one-channel groups erase global colour and brightness (see
            :func:`~.blocks.group_norm`).

    The defaults are the official x4 and x2 models' sizes.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["ResnetBlock2D", "SwinLayers"]
    _skip_layerwise_casting_patterns = ["quantize"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3, out_channels: int = 3,
        base_channels: int = 128,
        channel_multipliers: tuple[int, ...] = (1, 2, 2, 4),
        layers_per_block: int = 2,
        latent_channels: int = 128,
        num_vq_embeddings: int = 512,
        swin_dim: int = 256,
        # the Swin trunk
        swin_num_groups: int = 1, swin_depth: int = 6, swin_num_heads: int = 8,
        swin_window_size: int = 8, mlp_ratio: float = 4.0, swin_shift_windows: bool = True,
        commitment_beta: float = 0.25,
        legacy_vq_loss: bool = True,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        swin_kwargs = dict(
            dim=swin_dim,
            num_groups=swin_num_groups,
            depth=swin_depth,
            num_heads=swin_num_heads,
            window_size=swin_window_size,
            mlp_ratio=mlp_ratio,
            shift_windows=swin_shift_windows,
        )
        shared = (latent_channels, base_channels, tuple(channel_multipliers), layers_per_block, swin_kwargs,
                  norm_num_groups)
        self.encoder = SwinVQEncoder(in_channels, *shared)
        self.quantize = VectorQuantizer(num_vq_embeddings, latent_channels, commitment_beta, legacy_vq_loss)
        self.decoder = SwinVQDecoder(out_channels, *shared)

    @property
    def scale_factor(self) -> int:
        """Pixels per token along each side."""
        return 2 ** (len(self.config.channel_multipliers) - 1)

    # encode/decode are called outside ``forward`` (by the pipeline and training), so, as in diffusers' VQModel, they
    # trigger the model-CPU-offload hook themselves; otherwise the offloaded VQGAN would stay on the CPU.
    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True):
        """Image in [0, 1] (B, 3, H, W) -> pre-quantisation latents (B, C, H/f, W/f), f = :attr:`scale_factor`."""
        latents = self.encoder(x.clamp(0, 1) * 2 - 1)
        return VQEncoderOutput(latents=latents) if return_dict else (latents,)

    def encode_to_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [0, 1] -> codebook indices (B, H/f, W/f): the ground-truth tokens of ITER's LQ stage."""
        return self.quantize.indices(self.encode(x).latents)

    @apply_forward_hook
    def decode(
        self,
        h: torch.Tensor,
        force_not_quantize: bool = False,
        return_dict: bool = True,
        shape: tuple[int, ...] | None = None,
    ):
        """Render latents or codebook indices to an image in [0, 1].

        ``h`` is either integer indices ((B, h, w), or flat with ``shape=(B, h, w, C)``) or float latents
        (B, C, h, w), which are quantised first unless ``force_not_quantize``.
        """
        commit_loss = None
        if not torch.is_floating_point(h):
            quant = self.quantize.get_codebook_entry(h, shape)
        elif force_not_quantize:
            quant = h
        else:
            quant, commit_loss, _ = self.quantize(h)
        sample = self.render(quant)
        return DecoderOutput(sample=sample, commit_loss=commit_loss) if return_dict else (sample, commit_loss)

    def render(self, quant: torch.Tensor) -> torch.Tensor:
        """Decoder on codebook vectors (B, C, h, w) -> image in [0, 1]."""
        return ((self.decoder(quant) + 1) / 2).clamp(0, 1)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        """Reconstruct ``sample`` through the codebook; ``commit_loss`` is the VQ training loss."""
        quant, loss, _ = self.quantize(self.encode(sample).latents)
        dec = self.render(quant)
        return DecoderOutput(sample=dec, commit_loss=loss) if return_dict else (dec, loss)
