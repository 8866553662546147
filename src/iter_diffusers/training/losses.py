"""The loss functions ITER trains with (:mod:`.objectives` combines them per stage).

* :class:`VGG16PerceptualLoss`: perceptual distance on VGG16 features (own implementation of the torchvision/timm
  ``features`` stack, ImageNet weights from the Hub repo ``timm/vgg16.tv_in1k``). ``distance="lpips"`` is the
  LPIPS-VGG formula (unit-normalised features, squared difference, spatial mean, summed over layers); with the
  ``lpips`` package's linear calibration weights (``lpips_weights=``) it is exactly LPIPS-VGG v0.1, the loss of
  the official code (pyiqa ``lpips`` as a loss), otherwise the uncalibrated LPIPS "baseline" (plain channel sum).
  ``distance="l1"`` is the basicsr-style L1 between raw features.
* :func:`ssim_loss`: ``1 - SSIM`` per channel on RGB (pyiqa's ``ssimc``).
* :func:`discriminator_hinge_loss` / :func:`generator_hinge_loss`: the hinge GAN objective of stage I (the
  discriminator itself is :class:`iter_diffusers.models.discriminator.UNetDiscriminatorSN`).
* :func:`class_balanced_cross_entropy`: the evaluator's class-balanced CE (official ``class_balanced_xentropy``).
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.gaussian import gaussian_kernel_1d

__all__ = [
    "VGG16_HUB_REPO",
    "VGG16_HUB_FILENAME",
    "VGG16_LAYER_NAMES",
    "LPIPS_LAYERS",
    "VGGWeightsUnavailableError",
    "VGG16Features",
    "load_vgg16_features_state_dict",
    "find_lpips_package_weights",
    "VGG16PerceptualLoss",
    "ssim",
    "ssim_loss",
    "discriminator_hinge_loss",
    "generator_hinge_loss",
    "class_balanced_cross_entropy",
]

# ----------------------------------------------------------------------------------------------------------------
# VGG16 feature extractor
# ----------------------------------------------------------------------------------------------------------------

VGG16_HUB_REPO = "timm/vgg16.tv_in1k"
VGG16_HUB_FILENAME = "model.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# LPIPS' own input scaling ((2x - 1 - shift) / scale) is exactly this ImageNet normalisation of x in [0, 1].

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16_layer_names() -> tuple[str, ...]:
    names, block, conv = [], 1, 1
    for v in _VGG16_CFG:
        if v == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return tuple(names)


#: Names of the 31 modules of ``features`` in order (``features.{i}`` is ``VGG16_LAYER_NAMES[i]``).
VGG16_LAYER_NAMES = _vgg16_layer_names()
#: The layers LPIPS-VGG compares.
LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


class VGGWeightsUnavailableError(OSError):
    """The ImageNet VGG16 weights could not be downloaded or read."""


class VGG16Features(nn.Module):
    """VGG16 convolutional trunk with the module layout of torchvision's/timm's ``vgg16().features``.

    State-dict keys are ``features.{i}.weight/bias`` exactly as in torchvision ``vgg16-397923af.pth`` and timm
    ``vgg16.tv_in1k``. ReLUs are not in-place, so pre-activation (``conv*``) features can be tapped too.
    """

    def __init__(self, device: torch.device | str | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, v, kernel_size=3, padding=1, device=device), nn.ReLU()]
                in_ch = v
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Return ``{name: activation}`` for the requested layer names (stops after the deepest one)."""
        wanted = {VGG16_LAYER_NAMES.index(name): name for name in layers}
        out = {}
        for i, module in enumerate(self.features[: max(wanted) + 1]):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x
        return out


def _download_vgg16(repo_id: str, cache_dir, local_files_only: bool, revision: str | None) -> str:
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(
            repo_id, VGG16_HUB_FILENAME, cache_dir=cache_dir, local_files_only=local_files_only, revision=revision
        )
    except Exception as err:  # offline, DNS, HTTP, missing cache entry: all mean "not available here"
        raise VGGWeightsUnavailableError(
            f"Could not get the ImageNet VGG16 weights '{repo_id}/{VGG16_HUB_FILENAME}' from the Hugging Face Hub "
            f"({type(err).__name__}: {err}). The perceptual loss needs them. Either let this machine reach the Hub "
            f"once (the file is then cached), pre-download it elsewhere with `hf download {repo_id} "
            f"{VGG16_HUB_FILENAME}` and copy the cache (or set HF_HOME), or pass "
            "pretrained='/path/to/model.safetensors' (timm) or '/path/to/vgg16-397923af.pth' (torchvision). "
            "pretrained=False gives random weights, which are only useful for tests."
        ) from err


def load_vgg16_features_state_dict(
    source: str | os.PathLike = VGG16_HUB_REPO,
    *,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    revision: str | None = None,
) -> dict[str, torch.Tensor]:
    """Load the ``features.*`` tensors of an ImageNet VGG16 checkpoint.

    Args:
        source: a Hub repo id (default ``timm/vgg16.tv_in1k``, file ``model.safetensors``), a local ``.safetensors``
            / ``.pth`` file (timm or torchvision key names, optionally prefixed ``module.``/``model.``), or a
            folder holding ``model.safetensors``.
        cache_dir, local_files_only, revision: passed to ``huggingface_hub.hf_hub_download``.

    Raises:
        VGGWeightsUnavailableError: (an ``OSError``) when the file cannot be downloaded or read.
        ValueError: when the file is not a VGG16 checkpoint.
    """
    path = Path(source)
    if path.is_dir():
        path = path / VGG16_HUB_FILENAME
    if not path.is_file():
        if path.suffix in (".safetensors", ".pth", ".pt", ".bin") or os.path.isabs(source):
            raise VGGWeightsUnavailableError(f"VGG16 weight file not found: {path}")
        path = Path(_download_vgg16(str(source), cache_dir, local_files_only, revision))
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise VGGWeightsUnavailableError(f"Could not read VGG16 weights from {path}: {err}") from err
    state = {}
    for key, value in raw.items():
        for prefix in ("module.", "model."):
            key = key.removeprefix(prefix)
        if key.startswith("features."):
            state[key] = value
    expected = VGG16Features(device="meta").state_dict()
    bad = [k for k, v in expected.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(f"{path} is not a VGG16 checkpoint: missing or mis-shaped {bad[:4]}")
    return {k: state[k].float() for k in expected}


def find_lpips_package_weights(version: str = "v0.1") -> Path | None:
    """Path of ``lpips/weights/<version>/vgg.pth`` inside an installed ``lpips`` package, or ``None``.

    The package is located without being imported (importing ``lpips`` would import torchvision).
    """
    spec = importlib.util.find_spec("lpips")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "weights" / version / "vgg.pth"
        if candidate.is_file():
            return candidate
    return None


class VGG16PerceptualLoss(nn.Module):
    """Perceptual loss between two image batches on frozen VGG16 features.

    Inputs are ``(B, 3, H, W)`` RGB in ``input_range`` (default [0, 1]); they are mapped to [0, 1] and
    ImageNet-normalised. Gradients flow to both inputs; the VGG parameters are frozen.

    Args:
        layer_weights: ``{layer_name: weight}`` (names from :data:`VGG16_LAYER_NAMES`, e.g. ``"relu3_3"``).
            Default: weight 1 on each of :data:`LPIPS_LAYERS`.
        distance: ``"lpips"``: per layer ``mean_hw sum_c w_c (f̂_x - f̂_y)^2`` with ``f̂`` the features divided by
            their channel-wise L2 norm (+1e-10), and ``w_c`` the LPIPS linear weights if given, else 1;
            ``"l1"``: per layer ``mean |f_x - f_y|`` on raw features (basicsr's ``PerceptualLoss``).
            The loss is ``sum_layers weight * distance``.
        pretrained: ``True`` = download ``timm/vgg16.tv_in1k``; a repo id / file / folder (see
            :func:`load_vgg16_features_state_dict`); ``False`` = random weights (tests only).
        lpips_weights: path of LPIPS' ``vgg.pth`` (v0.1) linear calibration, or ``"auto"`` to take it from an
            installed ``lpips`` package (:func:`find_lpips_package_weights`); needs ``distance="lpips"`` and
            layers within :data:`LPIPS_LAYERS`. With it and unit layer weights the value equals LPIPS-VGG.
        reduction: ``"mean"`` over the batch or ``"none"`` for a ``(B,)`` tensor.
        input_range: value range of the inputs, e.g. ``(-1, 1)``.
        cache_dir, local_files_only, revision: Hub download options.

    Raises:
        VGGWeightsUnavailableError: (``OSError``) when pretrained weights are requested but cannot be had.
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float] | None = None,
        distance: Literal["lpips", "l1"] = "lpips",
        pretrained: bool | str | os.PathLike = True,
        lpips_weights: str | os.PathLike | None = None,
        reduction: Literal["mean", "none"] = "mean",
        input_range: tuple[float, float] = (0.0, 1.0),
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
    ):
        super().__init__()
        layer_weights = dict(layer_weights if layer_weights is not None else {name: 1.0 for name in LPIPS_LAYERS})
        unknown = [name for name in layer_weights if name not in VGG16_LAYER_NAMES]
        if unknown or not layer_weights:
            raise ValueError(f"layer_weights needs names from VGG16_LAYER_NAMES, got {sorted(layer_weights)}")
        if distance not in ("lpips", "l1"):
            raise ValueError(f"distance must be 'lpips' or 'l1', got {distance!r}")
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        self.layer_weights = layer_weights
        self.distance = distance
        self.reduction = reduction
        self.input_range = (float(input_range[0]), float(input_range[1]))

        if pretrained is False:
            self.vgg = VGG16Features()
        else:
            source = VGG16_HUB_REPO if pretrained is True else pretrained
            state = load_vgg16_features_state_dict(
                source, cache_dir=cache_dir, local_files_only=local_files_only, revision=revision
            )
            self.vgg = VGG16Features(device="meta")  # skip the random init, the weights are assigned below
            self.vgg.load_state_dict(state, assign=True)
        self.vgg.requires_grad_(False)
        self.vgg.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        self.calibrated = lpips_weights is not None
        if self.calibrated:
            if distance != "lpips" or any(name not in LPIPS_LAYERS for name in layer_weights):
                raise ValueError("lpips_weights need distance='lpips' and layers within LPIPS_LAYERS")
            path = find_lpips_package_weights() if lpips_weights == "auto" else Path(lpips_weights)
            if path is None or not Path(path).is_file():
                raise VGGWeightsUnavailableError(
                    f"LPIPS linear weights not found ({lpips_weights!r}); `pip install lpips` or pass the path of "
                    "its weights/v0.1/vgg.pth"
                )
            lin = torch.load(path, map_location="cpu", weights_only=True)
            for i, name in enumerate(LPIPS_LAYERS):
                weight = lin[f"lin{i}.model.1.weight"].float().flatten()
                self.register_buffer(f"lin_{name}", weight.view(1, -1, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()  # frozen feature extractor, always in inference mode
        return self

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.input_range
        x = (x - low) / (high - low)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        batch = pred.shape[0]
        feats = self.vgg(self._normalise(torch.cat([pred, target])), list(self.layer_weights))
        total = pred.new_zeros(batch)
        for name, weight in self.layer_weights.items():
            fx, fy = feats[name][:batch], feats[name][batch:]
            if self.distance == "l1":
                d = (fx - fy).abs().mean(dim=(1, 2, 3))
            else:
                fx = fx / (fx.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
                fy = fy / (fy.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
                diff = (fx - fy).pow(2)
                if self.calibrated:
                    diff = diff * getattr(self, f"lin_{name}").to(diff.dtype)
                d = diff.sum(dim=1).mean(dim=(1, 2))
            total = total + weight * d
        return total.mean() if self.reduction == "mean" else total


# ----------------------------------------------------------------------------------------------------------------
# SSIM
# ----------------------------------------------------------------------------------------------------------------


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    window_size: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    quantize: bool = False,
) -> torch.Tensor:
    """Differentiable per-image SSIM of ``(B, C, H, W)`` images, averaged over channels and positions: ``(B,)``.

    Gaussian window (``window_size``, ``sigma``; shrunk to the image if it is smaller), "valid" filtering (no
    padding), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``. As in pyiqa the contrast-structure term is clamped at 0.
    ``quantize=True`` rounds to the 8-bit grid with a straight-through gradient, as pyiqa's loss does.
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two equal (B, C, H, W) tensors, got {tuple(x.shape)} and {tuple(y.shape)}")
    if quantize:
        x = x + ((x * 255 / data_range).round() * data_range / 255 - x).detach()
        y = y + ((y * 255 / data_range).round() * data_range / 255 - y).detach()
    size = min(window_size, x.shape[-2], x.shape[-1])
    g = torch.from_numpy(gaussian_kernel_1d(size, sigma)).to(x.device, x.dtype)
    channels = x.shape[1]
    wx = g.view(1, 1, 1, -1).expand(channels, 1, 1, size)
    wy = g.view(1, 1, -1, 1).expand(channels, 1, size, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wx, groups=channels), wy, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs = F.relu((2 * cov + c2) / (var_x + var_y + c2))
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (lum * cs).mean(dim=(1, 2, 3))


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, **kwargs) -> torch.Tensor:
    """``1 - SSIM`` averaged over the batch, on RGB in [0, 1] (the official ``ssimc`` loss); see :func:`ssim`.

    Computed in fp32 whatever the autocast: the variances are differences of near-equal moments, which bf16/fp16
    cancel to noise (and then to inf/NaN through the division)."""
    with torch.autocast(pred.device.type, enabled=False):
        return 1.0 - ssim(pred.float(), target.float(), **kwargs).mean()


# ----------------------------------------------------------------------------------------------------------------
# GAN losses
# ----------------------------------------------------------------------------------------------------------------


def discriminator_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`` (pass ``D(fake.detach())``)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def generator_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-mean(D(fake))``."""
    return -fake_logits.mean()


@contextmanager
def frozen(module: nn.Module | None):
    """Within the block ``module``'s parameters take no gradient: the generator's step back-propagates through
    the discriminator without touching its gradients. Their ``requires_grad`` flags are restored afterwards."""
    if module is None:
        yield
        return
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)


# ----------------------------------------------------------------------------------------------------------------
# Token / codebook losses
# ----------------------------------------------------------------------------------------------------------------


def class_balanced_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, beta: float = 0.9999, eps: float = 1e-8
) -> torch.Tensor:
    """Cross-entropy with "effective number of samples" class weights (Cui et al., 2019), as the official code.

    With ``n_c`` the count of class ``c`` in ``labels`` (``K`` classes = ``logits.shape[-1]`` for 2-D logits):
    ``w_c = (1 - beta) / (1 - beta**n_c + eps)``, then ``w <- w / (sum w + eps) * K``, and
    ``F.cross_entropy(logits, labels, weight=w)`` (weighted mean: divided by the summed weights of the targets).
    Absent classes get a huge raw weight, which only matters through the normalisation (as officially).

    ``logits`` is ``(N, K)`` with ``labels`` ``(N,)``; ``(B, K, *spatial)`` logits with ``(B, *spatial)`` labels
    are flattened to that form first (the official call site does this by hand).
    """
    if logits.dim() > 2:
        logits = logits.movedim(1, -1).reshape(-1, logits.shape[1])
    labels = labels.reshape(-1).long()
    num_classes = logits.shape[-1]
    counts = torch.bincount(labels, minlength=num_classes)
    weights = (1.0 - beta) / (1.0 - torch.pow(beta, counts).float() + eps)  # float32 even for bf16 logits
    weights = weights / (weights.sum() + eps) * num_classes
    return F.cross_entropy(logits, labels, weight=weights.to(logits.dtype))
