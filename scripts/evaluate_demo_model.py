#!/usr/bin/env python
"""Measure an ITER pipeline against bicubic upscaling: held-out HQ images degraded with the training pipeline
(PSNR / SSIM on Y, NIQE) and, optionally, real low-quality photos without ground truth (NIQE only).

    python scripts/evaluate_demo_model.py --val_dir data_cache/demo_dataset_512/val \
        --realworld_dir ../shared/data/realworld_lq --json results.json --crops docs/images

Each HQ image is cropped to a multiple of the scale, degraded with the light BSRGAN pipeline (seed = its index),
and restored with seed 123. Lower NIQE is better; PSNR/SSIM favour blur, NIQE favours natural-looking texture.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from iter_diffusers import ITERPipeline
from iter_diffusers.cli.upscale import DEFAULT_MODEL
from iter_diffusers.evaluation import calculate_niqe, calculate_psnr, calculate_ssim
from iter_diffusers.training.degradations import BSRGANLightConfig, degrade

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def to_u8(array: np.ndarray) -> np.ndarray:
    return (array.clip(0, 1) * 255).round().astype(np.uint8)


def bicubic(lq: np.ndarray, scale: int) -> np.ndarray:
    image = PIL.Image.fromarray(lq)
    return np.asarray(image.resize((image.width * scale, image.height * scale), PIL.Image.BICUBIC))


def restore(pipe, lq: np.ndarray) -> np.ndarray:
    out = pipe(lq, generator=torch.Generator().manual_seed(123), output_type="np").images[0]
    return to_u8(out)


def comparison_strip(panels: dict, scale: int, side: int = 192, gap: int = 4) -> PIL.Image.Image:
    """Side-by-side centre crops (``side`` HQ pixels) of LQ (nearest-neighbour ×scale), bicubic, ITER and HQ."""
    height, width = panels["hq"].shape[:2]
    top, left = (height - side) // 2 // scale * scale, (width - side) // 2 // scale * scale
    lq = panels["lq"][top // scale : (top + side) // scale, left // scale : (left + side) // scale]
    crops = [np.asarray(PIL.Image.fromarray(lq).resize((side, side), PIL.Image.NEAREST))]
    crops += [panels[name][top : top + side, left : left + side] for name in ("bicubic", "iter", "hq")]
    strip = np.full((side, 4 * side + 3 * gap, 3), 255, np.uint8)
    for index, crop in enumerate(crops):
        strip[:, index * (side + gap) : index * (side + gap) + side] = crop
    return PIL.Image.fromarray(strip)


def mean(rows, key):
    return float(np.mean([r[key] for r in rows]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--val_dir", required=True, help="held-out HQ images")
    parser.add_argument("--realworld_dir", default=None, help="real LQ photos (no ground truth)")
    parser.add_argument("--max_side", type=int, default=512, help="HQ images are centre-cropped to at most this")
    parser.add_argument("--crop_border", type=int, default=4)
    parser.add_argument("--json", default=None)
    parser.add_argument("--crops", default=None, help="folder for before/after example crops")
    parser.add_argument("--comparison", default=None,
                        help="PNG of centre crops of the first held-out image: LQ | bicubic | ITER | HQ")
    args = parser.parse_args()

    pipe = ITERPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    scale = pipe.upscale_factor
    synthetic = []
    paths = sorted(p for p in Path(args.val_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for index, path in enumerate(paths):
        hq = np.asarray(PIL.Image.open(path).convert("RGB"), dtype=np.float32) / 255
        h, w = (min(s, args.max_side) // scale * scale for s in hq.shape[:2])
        top, left = (hq.shape[0] - h) // 2, (hq.shape[1] - w) // 2
        lq, hq = degrade(hq[top : top + h, left : left + w], scale, BSRGANLightConfig(), np.random.default_rng(index))
        lq_u8, hq_u8 = to_u8(lq), to_u8(hq)
        row = {"image": path.name}
        panels = {"lq": lq_u8, "hq": hq_u8}
        for name, sr in (("bicubic", bicubic(lq_u8, scale)), ("iter", restore(pipe, lq_u8))):
            panels[name] = sr
            row[f"{name}_psnr"] = calculate_psnr(sr, hq_u8, crop_border=args.crop_border)
            row[f"{name}_ssim"] = calculate_ssim(sr, hq_u8, crop_border=args.crop_border)
            row[f"{name}_niqe"] = calculate_niqe(sr, crop_border=args.crop_border)
            if args.crops and index < 3:
                Path(args.crops).mkdir(parents=True, exist_ok=True)
                PIL.Image.fromarray(sr).save(Path(args.crops) / f"{path.stem}_{name}.png")
        if args.crops and index < 3:
            PIL.Image.fromarray(hq_u8).save(Path(args.crops) / f"{path.stem}_hq.png")
            PIL.Image.fromarray(lq_u8).save(Path(args.crops) / f"{path.stem}_lq.png")
        if args.comparison and index == 0:
            comparison_strip(panels, scale).save(args.comparison)
        synthetic.append(row)
        print(json.dumps(row))

    real = []
    if args.realworld_dir:
        for path in sorted(p for p in Path(args.realworld_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            lq_u8 = np.asarray(PIL.Image.open(path).convert("RGB"))
            row = {"image": path.name}
            for name, sr in (("bicubic", bicubic(lq_u8, scale)), ("iter", restore(pipe, lq_u8))):
                row[f"{name}_niqe"] = calculate_niqe(sr, crop_border=args.crop_border)
            real.append(row)
            print(json.dumps(row))

    summary = {"model": args.model, "synthetic": synthetic, "realworld": real}
    table = ["| set | method | PSNR (Y) ↑ | SSIM (Y) ↑ | NIQE ↓ |", "|---|---|---|---|---|"]
    for name in ("bicubic", "iter"):
        table.append(f"| held-out ({len(synthetic)} images, BSRGAN-light ×{scale}) | {name} | "
                     f"{mean(synthetic, name + '_psnr'):.2f} | {mean(synthetic, name + '_ssim'):.4f} | "
                     f"{mean(synthetic, name + '_niqe'):.3f} |")
    for name in ("bicubic", "iter") if real else ():
        table.append(f"| real-world LQ ({len(real)} photos) | {name} | – | – | {mean(real, name + '_niqe'):.3f} |")
    summary["table"] = "\n".join(table)
    print(summary["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
