"""Hub model cards (``README.md``) for converted and trained ITER pipelines."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .conversion import OFFICIAL_RELEASE_URL

TAGS = ["super-resolution", "image-restoration", "real-world-sr", "vqgan", "masked-token", "iter", "diffusers"]

LICENCE_NOTE = (
    "The official ITER code and weights are released under **CC BY-NC-SA 4.0** with the S-Lab licence "
    "(non-commercial use only). Weights converted from them, or fine-tuned from them, inherit these terms."
)

CITATION = """```bibtex
@inproceedings{chen2024iter,
  title     = {Iterative Token Evaluation and Refinement for Real-World Super-Resolution},
  author    = {Chen, Chaofeng and Zhou, Shangchen and Liao, Liang and Wu, Haoning and Sun, Wenxiu and Yan, Qiong and Lin, Weisi},
  booktitle = {AAAI},
  year      = {2024}
}
```"""


def usage_snippet(repo_or_path: str, scale: int) -> str:
    return f"""```python
import torch
from PIL import Image
from iter_diffusers import ITERPipeline  # import first: diffusers cannot find the ITER classes by itself

pipe = ITERPipeline.from_pretrained("{repo_or_path}")
lq = Image.open("photo.png")
sr = pipe(lq, generator=torch.Generator().manual_seed(123)).images[0]   # x{scale}
sr.save("photo_x{scale}.png")
```

`DiffusionPipeline.from_pretrained(...)` (and the Hub's automatic snippet) does not work for this pipeline:
install `iter-diffusers` and use `ITERPipeline` as above."""


def _config_summary(pipe) -> str:
    sched = pipe.scheduler.config
    vq, enc = pipe.vqvae.config, pipe.encoder.config
    return (
        f"- scale: x{enc.scale_factor}; codebook {vq.num_vq_embeddings} × {vq.latent_channels}\n"
        f"- defaults: T = {pipe.config.num_inference_steps} steps, α = {sched.mask_threshold}, token / mask "
        f"temperatures {sched.token_temperature} / {sched.mask_temperature}, `{sched.masking_schedule}` schedule, "
        f"colour fix {_color_fix(pipe)}\n"
        "- input: RGB in [0, 1] of any size (mirror-padded internally, output exactly s·H × s·W); inputs whose run "
        "would need more than 1 GiB of activations are processed in blended tiles by default\n"
        f"- parameters: VQGAN {_count(pipe.vqvae)}, E_l {_count(pipe.encoder)}, φ_e {_count(pipe.evaluator)}, "
        f"φ_r {_count(pipe.refiner)}"
    )


def _color_fix(pipe) -> str:
    method = pipe.config.color_fix
    if method == "wavelet":
        return f"wavelet ({pipe.config.color_fix_levels} level{'s' if pipe.config.color_fix_levels > 1 else ''})"
    return method or "none"


def _count(module) -> str:
    return f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M"


def _provenance(sources: dict[str, str], release_url: str | None) -> str:
    """Where the converted files came from, and whether that makes them the official weights."""
    files = "\n".join(f"- `{name}` (SHA-256 `{digest}`)" for name, digest in sources.items())
    if release_url == OFFICIAL_RELEASE_URL:
        return f"Downloaded from the official ITER release v0.1.0 ({release_url}):\n\n{files}"
    where = f"downloaded from {release_url}" if release_url else "local files"
    return (f"Converted from checkpoints in the official format ({where}):\n\n{files}\n\nThese are the official "
            "ITER weights only if the digests are those of the v0.1.0 release files; nothing here checked that.")


def converted_model_card(pipe, sources: dict[str, str], repo_id: str | None = None,
                         release_url: str | None = None) -> ModelCard:
    """Card for a pipeline converted from checkpoints in the official format.

    Args:
        pipe (`ITERPipeline`): the converted pipeline.
        sources (`dict[str, str]`): file name -> SHA-256 of the converted files, recorded in the card's metadata
            (``source_files``, read back by :func:`recorded_source_files`) and text.
        repo_id (`str`, *optional*): Hub id for the usage snippet.
        release_url (`str`, *optional*): where the files were downloaded from; only the official release URL
            makes the card call them the official weights.
    """
    scale = pipe.encoder.config.scale_factor
    official = release_url == OFFICIAL_RELEASE_URL
    data = ModelCardData(license="cc-by-nc-sa-4.0", pipeline_tag="image-to-image", tags=TAGS, inference=False,
                         source_files=[{"name": name, "sha256": digest} for name, digest in sources.items()])
    body = f"""---
{data.to_yaml()}
---

# ITER x{scale} ({"official weights, converted" if official else "converted checkpoints"})

ITER, *Iterative Token Evaluation and Refinement for Real-World Super-Resolution* (Chen et al., AAAI 2024),
restores a degraded photo by predicting tokens of a high-quality VQGAN codebook: E_l predicts them from the
low-quality image, φ_e judges which are right, φ_r re-predicts the rest over a few steps, and the VQGAN decoder
renders the result.

## Usage

{usage_snippet(repo_id or "PATH_TO_THIS_FOLDER", scale)}

{_config_summary(pipe)}

Sampling is stochastic: pass a `generator` (or one per image) for reproducible results.

## Provenance

{_provenance(sources, release_url)}

Converted by iter-diffusers (against the official code, github.com/chaofengc/ITER at commit 826bcaa): every
tensor was mapped exactly once; buffers were recomputed and checked. On the official tiny parity fixtures the
converted pipeline matches `model.test` to 4e-6 (fp32, CPU).

## Limitations

ITER hallucinates plausible texture from its codebook: it can invent detail, alter text and faces, and is not
suited to forensic or medical use. The release was trained on synthetic degradations of natural photos.

## Licence

{LICENCE_NOTE}

## Citation

{CITATION}
"""
    return ModelCard(body)


def recorded_source_files(folder: str | Path) -> dict[str, str]:
    """The ``source_files`` (file name -> SHA-256) of a converted folder's card; empty if there is none."""
    card_path = Path(folder) / "README.md"
    if not card_path.is_file():
        return {}
    entries = ModelCard.load(card_path).data.to_dict().get("source_files") or []
    return {entry["name"]: entry["sha256"] for entry in entries}


def _eval_results(metrics: dict | None, datasets: list[str] | None) -> list[EvalResult]:
    """``model-index`` entries for validation metrics named like ``val/psnr`` or ``val/reconstruction_ssim``."""
    return [
        EvalResult(task_type="image-to-image", task_name="Image super-resolution",
                   dataset_type=datasets[0] if datasets else "imagefolder", dataset_name="held-out validation images",
                   dataset_split="validation", metric_type=name.rpartition("/")[2].rpartition("_")[2],
                   metric_name=name, metric_value=round(float(value), 4))
        for name, value in (metrics or {}).items()
    ]


def trained_model_card(pipe, *, title: str, description: str, training: dict, metrics: dict | None,
                       base_model: str | None = None, datasets: list[str] | None = None,
                       license: str = "cc-by-nc-sa-4.0", repo_id: str | None = None,
                       images: list[str] | None = None, results_table: str | None = None,
                       licence_text: str | None = None) -> ModelCard:
    """Card for a pipeline trained with ``examples/train_iter.py``. ``results_table`` (markdown) replaces the
    table of ``metrics``; ``licence_text`` replaces the default licence paragraph. ``metrics`` (validation name ->
    value, e.g. ``{"val/psnr": 24.1}``) also go into the card's ``model-index``."""
    scale = pipe.encoder.config.scale_factor
    data = ModelCardData(license=license, pipeline_tag="image-to-image", tags=TAGS + ["diffusers-training"],
                         inference=False, base_model=base_model, datasets=datasets, model_name=title,
                         eval_results=_eval_results(metrics, datasets) or None)
    info = "\n".join(f"- {k}: {v}" for k, v in training.items())
    results = "\n".join(f"| {k} | {v} |" for k, v in (metrics or {}).items())
    results = f"| metric | value |\n|---|---|\n{results}" if results else "No validation metrics were recorded."
    if licence_text is None:
        licence_text = f"{license}. {LICENCE_NOTE if license == 'cc-by-nc-sa-4.0' else ''}"
    gallery = "\n".join(f"![{name}](./{name})" for name in images or [])
    body = f"""---
{data.to_yaml()}
---

# {title}

{description}

## Usage

{usage_snippet(repo_id or "PATH_TO_THIS_FOLDER", scale)}

{_config_summary(pipe)}

## Training

{info}

## Results

{results_table or results}

{gallery}

## Licence

{licence_text}

## Citation

{CITATION}
"""
    return ModelCard(body)
