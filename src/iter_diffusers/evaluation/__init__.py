"""Image quality metrics for evaluating super-resolution results.

* :func:`calculate_psnr`, :func:`calculate_ssim`: full-reference, on the BT.601 Y channel by default;
* :func:`calculate_color_error`: the largest per-channel difference of mean colours (global or per tile);
* :func:`calculate_edge_sharpness`, :func:`calculate_flat_noise`: full-reference, is an upscale as sharp as the
  ground truth on its edges, and as smooth on its flat regions (no invented speckle)?
* :func:`calculate_niqe`: no-reference NIQE with the MATLAB release's pristine model;
* :func:`imresize`: MATLAB-compatible bicubic ``imresize`` (from :mod:`iter_diffusers.utils.imresize`);
* the ``iter-sr-eval`` command line tool (:mod:`iter_diffusers.evaluation.cli`) evaluates folders of images.

Everything here needs only NumPy (Pillow for the command line tool). ``iter-sr-eval --lpips`` adds LPIPS-VGG v0.1
through :class:`~iter_diffusers.training.losses.VGG16PerceptualLoss` (torch; no torchvision) when its two weight
files are available; ``iter-sr-eval --clipiqa`` adds CLIP-IQA (:mod:`iter_diffusers.evaluation.clip_iqa`, through
transformers' ``CLIPModel``).
"""

from .metrics import calculate_color_error, calculate_psnr, calculate_ssim, prepare_for_metric, rgb2ycbcr_y, to_float255
from ..utils.imresize import imresize
from .niqe import calculate_niqe, load_niqe_params
from .sharpness import calculate_edge_sharpness, calculate_flat_noise

__all__ = [
    "calculate_color_error",
    "calculate_edge_sharpness",
    "calculate_flat_noise",
    "calculate_psnr",
    "calculate_ssim",
    "calculate_niqe",
    "imresize",
    "load_niqe_params",
    "prepare_for_metric",
    "rgb2ycbcr_y",
    "to_float255",
]
