#!/usr/bin/env python
"""Write the model card (``README.md``) of the bundled demo model from what its training and evaluation recorded.

    python scripts/write_demo_model_card.py --model src/iter_diffusers/pretrained/iter-demo-x4 \
        --run data_cache/demo_run --data data_cache/demo_dataset_512 --eval data_cache/demo_eval.json

The card states the data (sources and licences, from the data set's ``metadata.jsonl``), the recipe and time of
the six training stages (their ``README.md`` and ``training_summary.json``), the measured quality (the JSON of
``scripts/evaluate_demo_model.py``) and the licence. Its figures are read from those records, not typed by hand.
A stage whose run folder is gone (say, stages I–V when only stage VI was run again) keeps its record from the
model's earlier card: ``--previous_card``.
"""

import argparse
import collections
import json
import re
from pathlib import Path

from iter_diffusers import ITERPipeline
from iter_diffusers.model_card import trained_model_card

DESCRIPTION = """A small ×4 ITER trained from scratch on a 2-core CPU with `examples/train_iter.py`
(`bash scripts/train_demo_model.sh` in the iter-diffusers repository). It is the default model of `iter-sr`, so
that the package upscales images with no download. It is **not** the paper's model: no official weights were used,
and with about {params} M parameters, {images} training photos, no perceptual loss (its VGG16 weights cannot be
downloaded offline) and 1000 adversarial steps it is far below the official release. Its E_l is an
`ITERUpsamplingEncoder`: the bicubic ×4 upscale, encoded by a copy of the VQGAN's encoder that was then trained
to regress the VQGAN latents of the HQ image, and then with an adversarial loss on its own image. Last, the
VQGAN's decoder (its encoder and codebook frozen, so no token changed) learnt to render E_l's tokens as the HQ
image, with an adversarial loss, while still rendering the HQ image's own tokens. Last, a VQGAN and an E_l
slimmer at the finest levels, where the default path spends its time (widths {widths} from the output resolution
down), were distilled from that pipeline: they learnt its decoder's images and its encoders' latents on its
codebook, so the tokens mean what they meant and φ_e, φ_r are unchanged. Its defaults
were chosen on the tuning photos: {alpha} and the wavelet colour fix (`color_fix="{color_fix}"`,
`color_fix_levels={levels}`: the input supplies colour and the coarse bands, the codebook the detail finer than
about {period} output pixels). On held-out photos its output is about as faithful as bicubic (PSNR within a few
tenths of a dB, a higher SSIM; see Results), with the right colours, visibly crisper edges and no speckle in flat
regions (edge sharpness and flat noise in Results). It does **not** restore texture: fur, foliage and grain stay
soft, far from the HQ photo, and in dense foliage the 8-px token grid can show as blocky highlights. The stages' validation figures below use the training-time pipeline
settings (T = 8, α = 0.7, no colour fix), not these defaults. For real restoration use the official weights
(`--model official-x4`)."""

LICENCE = """Weights: Apache-2.0, like the iter-diffusers code; they were trained from scratch here and contain no
official ITER weights. The training photos carry their own licences ({licences}); see `SOURCES.md` of the data set
built by `scripts/build_demo_dataset.py`. Whether such licences reach trained weights is unsettled; if that matters
to you, retrain on data of your choice with the same script."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"error: cannot read {path}: {error}") from None


def data_summary(data_dir: Path) -> tuple[str, list[str], int]:
    """One line on the data set, its distinct licences, and the number of training photos."""
    splits = {}
    for split in ("train", "tune", "val"):
        metadata = data_dir / split / "metadata.jsonl"
        lines = metadata.read_text().splitlines() if split == "train" or metadata.exists() else []
        splits[split] = [json.loads(line) for line in lines if line.strip()]
    sources = collections.Counter(row["source"] for row in splits["train"])
    held_out = collections.Counter(row["source"] for row in splits["val"])
    licences = sorted({row["licence"].split(" (")[0] for rows in splits.values() for row in rows})
    tuning = f"{len(splits['tune'])} for tuning the sampling defaults, " if splits["tune"] else ""
    line = (f"{len(splits['train'])} training photos ({', '.join(f'{n} {s}' for s, n in sources.most_common())}), "
            f"{tuning}{len(splits['val'])} held out ({', '.join(f'{n} {s}' for s, n in held_out.most_common())}), "
            "long sides ≤ 512 px; built offline by `scripts/build_demo_dataset.py` from package-registry files")
    return line, licences, len(splits["train"])


RECIPE_KEYS = ("steps", "optimiser", "losses", "codebook restarts", "EMA", "mixed precision")


def stage_record(stage_dir: Path, summary: dict) -> str:
    """One stage's recipe, as its own card (written by examples/train_iter.py) lists it, with its time and results
    from its ``training_summary.json``."""
    card = (stage_dir / "README.md").read_text().split("## Training", 1)[-1].split("\n## ", 1)[0]
    recipe = dict(line[2:].split(": ", 1) for line in card.splitlines() if line.startswith("- ") and ": " in line)
    minutes = summary["steps"] * summary["seconds_per_step"] / 60
    validation = ", ".join(f"{k.split('/')[-1]} {v:.3g}" for k, v in summary.get("validation", {}).items())
    return "; ".join([*(f"{key} {recipe[key]}" for key in RECIPE_KEYS if key in recipe),
                      f"{summary['seconds_per_step']:.2f} s/step ({minutes:.0f} min)",
                      f"loss {summary['first']['loss']:.3f} → {summary['last']['loss']:.3f}",
                      f"held-out validation: {validation or 'none'}"])


STAGES = (  # (run folder, the stage as the card names it)
    ("vqgan", "stage I (Swin-VQGAN, 128-px HQ crops)"),
    ("encoder", "stage II (E_l from the VQGAN, latent regression; 128-px HQ crops, LQ from the light BSRGAN pipeline)"),
    ("lq", "stage III (φ_e, φ_r on the frozen E_l; same crops and LQ)"),
    ("encoder_gan", "stage IV (E_l again, latent regression + hinge GAN on its own image; same crops and LQ)"),
    ("decoder_gan", "stage V (the VQGAN's decoder on E_l's tokens and the HQ tokens, + hinge GAN; encoder and "
                    "codebook frozen)"),
    ("distill", "stage VI (a slimmer VQGAN and E_l taught by stage V's pipeline; same crops and LQ, its codebook, "
                "φ_e and φ_r)"),
)


def previous_records(card: Path | None) -> dict[str, tuple[str, float]]:
    """{stage name: (record, minutes)} of the stages an earlier card of the model lists, with the minutes from the
    record's steps and seconds per step (the rounded minutes it prints would add up wrong)."""
    if card is None:
        return {}
    records = {}
    for line in card.read_text(encoding="utf-8").splitlines():
        for _, name in STAGES:
            if line.startswith(f"- {name}: "):
                record = line[len(name) + 4:]
                timing = re.search(r"steps (\d+) ×.*?; ([\d.]+) s/step", record)
                if timing is None:
                    raise SystemExit(f"error: {card}: no steps and s/step in the record of {name}")
                records[name] = (record, int(timing[1]) * float(timing[2]) / 60)
    return records


def stage_records(run: Path, previous: dict) -> dict[str, tuple[str, float]]:
    """Every stage's (record, minutes): from its run folder, else from the earlier card."""
    records = {}
    for folder, name in STAGES:
        summary_file = run / folder / "training_summary.json"
        if summary_file.exists():
            summary = read_json(summary_file)
            records[name] = (stage_record(run / folder, summary), summary["steps"] * summary["seconds_per_step"] / 60)
        elif name in previous:
            records[name] = previous[name]
        else:
            raise SystemExit(f"error: no record of {name}: {summary_file} is missing and no --previous_card lists it")
    return records


def threshold_text(alpha: float) -> str:
    """The default α, and what it means when it switches the refinement off."""
    if alpha > 0:
        return f"α = {alpha}"
    return ("α = 0 (φ_e trusts every token of S_l, so φ_r does not run: there every refinement cost "
            "fidelity and added speckle)")


def sampling_defaults(pipe) -> str:
    scheduler = pipe.scheduler.config
    return (f"T = {pipe.config.num_inference_steps}, α = {scheduler.mask_threshold}, token temperature "
            f"{scheduler.token_temperature}, colour fix {pipe.config.color_fix} (levels {pipe.config.color_fix_levels})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the bundled pipeline folder (the card is written into it)")
    parser.add_argument("--run", required=True,
                        help="the training folder, with a subfolder per stage: " + ", ".join(f for f, _ in STAGES))
    parser.add_argument("--data", required=True, help="the data set folder (train/ and val/ with metadata.jsonl)")
    parser.add_argument("--eval", required=True, help="JSON written by scripts/evaluate_demo_model.py --json")
    parser.add_argument("--previous_card", type=Path, default=None,
                        help="an earlier card of this model: the records of stages whose run folders are gone")
    args = parser.parse_args()

    run = Path(args.run)
    evaluation = read_json(Path(args.eval))
    records = stage_records(run, previous_records(args.previous_card))
    pipe = ITERPipeline.from_pretrained(args.model)
    data, licences, images = data_summary(Path(args.data))
    params = sum(p.numel() for part in (pipe.vqvae, pipe.encoder, pipe.evaluator, pipe.refiner)
                 for p in part.parameters()) / 1e6
    minutes = sum(m for _, m in records.values())
    training = {
        "data": data,
        **{name: record for name, (record, _) in records.items()},
        "sampling defaults": f"{sampling_defaults(pipe)}; chosen on the tuning photos, never on the held-out ones",
        "total training time": f"{minutes:.0f} min on a 2-core CPU (no GPU)",
        "reproduce": "`bash scripts/train_demo_model.sh` (data, the six stages, bundling, evaluation, this card)",
    }
    table = evaluation["table"] + (
        "\n\nHeld-out photos centre-cropped to ≤ 512 px and degraded ×4 by the `heldout` chain (blur, bicubic, noise, "
        "JPEG; never used in training) and by the training pipeline (`bsrgan_light`); PSNR/SSIM on Y with a 4-pixel "
        "border; colour error: the largest per-channel difference of mean colours (0–255), over the image and "
        "averaged over 32-px tiles; edge sharpness: the mean gradient magnitude on the HQ photo's strongest 10 % "
        "edges, relative to the HQ's (HQ = 1); flat noise: the RMS high-pass residual (grey levels) on its flattest "
        "30 % (the HQ's own is the row HQ; more than bicubic's would be invented speckle); NIQE (lower is better; it rewards invented texture) with the MATLAB parameters; "
        "the model's default settings, seed 123. The real-world photos have no ground truth, so only NIQE is given.")
    alpha = threshold_text(pipe.scheduler.config.mask_threshold)
    card = trained_model_card(
        pipe, title="ITER ×4 demo model (iter-diffusers, trained on CPU)",
        description=DESCRIPTION.format(params=f"{params:.1f}", images=images, color_fix=pipe.config.color_fix,
                                       widths="/".join(str(pipe.vqvae.config.base_channels * m)
                                                       for m in pipe.vqvae.config.channel_multipliers),
                                       levels=pipe.config.color_fix_levels, alpha=alpha,
                                       period=2 ** (pipe.config.color_fix_levels + 1)),
        training=training,
        metrics=None, results_table=table, license="apache-2.0",
        licence_text=LICENCE.format(licences="; ".join(licences)),
        images=[name for name in ("validation_grid.png",) if (Path(args.model) / name).exists()])
    card.save(Path(args.model) / "README.md")
    print(f"wrote {Path(args.model) / 'README.md'}")


if __name__ == "__main__":
    main()
