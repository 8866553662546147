"""Hub model cards (``README.md``) for converted and trained ITER pipelines."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .conversion import OFFICIAL_RELEASE_URL

TAGS = ["super-resolution", "image-restoration", "real-world-sr", "vqgan", "masked-token", "iter", "diffusers"]

LICENCE_NOTE = (
    "The official ITER code and weights are released under **CC BY-NC-SA 4.0** with the S-Lab licence "
    "(non-commercial use only). Weights converted from them, or fine-tuned from them, inherit these terms."
)

#: The licence of the official ITER weights and of every weight converted or trained from them (share-alike).
OFFICIAL_LICENSE = "cc-by-nc-sa-4.0"
#: ``license_name`` of a card whose trainer chose no licence (``license: other``): the Hub has no id for "none chosen".
UNCHOSEN_LICENSE_NAME = "not-chosen"
#: ``weights_origin`` values of trained cards, as the web demo words them.
WEIGHTS_ORIGINS = {
    "official-derived": "derived from the official ITER weights",
    "from-scratch": "trained from scratch",
    "derived": "trained from another pipeline",
}


class LicenceConflict(ValueError):
    """A licence asked for that the weights a run starts from do not allow."""


@dataclass(frozen=True)
class WeightsLicence:
    """The licence of trained weights and why it applies: the card's ``license`` (``license_name``), its
    ``weights_origin`` and the sentence its Licence section gives as the reason."""

    license: str
    origin: str
    reason: str
    license_name: str | None = None

    def card_fields(self) -> dict:
        """The :func:`trained_model_card` arguments that state this licence."""
        terms = f"\n\n{LICENCE_NOTE}" if self.license == OFFICIAL_LICENSE else ""
        name = "No licence chosen" if self.license_name == UNCHOSEN_LICENSE_NAME else self.license_name or self.license
        text = f"**{name}** ({WEIGHTS_ORIGINS[self.origin]}). {self.reason}{terms}"
        return {"license": self.license, "license_name": self.license_name, "weights_origin": self.origin,
                "licence_text": text}


def _chosen_or_unchosen(chosen: str | None, origin: str, reason: str) -> WeightsLicence:
    if chosen:
        return WeightsLicence(chosen, origin, f"{reason} The trainer chose this licence (`--license`).")
    return WeightsLicence("other", origin, f"{reason} No licence was chosen for these weights (`--license`): ask "
                          "whoever trained them.", UNCHOSEN_LICENSE_NAME)


def weights_licence(start: str | None, start_card: dict | None, chosen: str | None) -> WeightsLicence:
    """The licence of weights trained from ``start`` (None: from scratch), whose model card metadata is
    ``start_card`` (None: it has no card), with ``chosen`` the licence asked for (``--license``) or None.

    Weights of the official release, and any converted or trained from them, carry CC BY-NC-SA 4.0 and pass it on
    (share-alike): asking for another licence raises :class:`LicenceConflict`. Other starts keep their licence
    unless another is chosen; weights from scratch, or from a start whose licence is not stated, have the chosen
    one, else ``other`` with ``license_name`` :data:`UNCHOSEN_LICENSE_NAME` (no licence is made up for them). A
    start with no card at all says nothing of its origin: choosing a licence for it raises too.
    """
    if start is None:
        return _chosen_or_unchosen(chosen, "from-scratch", "Trained from random initialisation: no official ITER "
                                   "weights went into it, so their terms do not apply.")
    if start_card is None and chosen not in (None, OFFICIAL_LICENSE):
        # save_pretrained writes no card: such a start may well hold the official weights, whose terms pass on
        raise LicenceConflict(
            f"--license {chosen}: {start} has no model card saying what its weights were made from, so a licence "
            f"cannot be chosen for weights trained from it (they may derive from the official ITER weights, "
            f"{OFFICIAL_LICENSE}); add the card of the weights it came from (README.md), or drop --license")
    card = start_card or {}
    if card.get("license") == OFFICIAL_LICENSE or card.get("weights_origin") == "official-derived" \
            or card.get("source_files"):
        if chosen not in (None, OFFICIAL_LICENSE):
            raise LicenceConflict(
                f"--license {chosen}: {start} holds the official ITER weights or weights derived from them "
                f"({OFFICIAL_LICENSE}, share-alike), so weights trained from it keep {OFFICIAL_LICENSE}; drop "
                "--license, or train from scratch (--model_config) for a licence of your choice")
        return WeightsLicence(OFFICIAL_LICENSE, "official-derived", f"Trained from `{start}`, which holds the "
                              "official ITER weights or weights derived from them: their terms pass on to these.")
    if not card.get("license"):
        return _chosen_or_unchosen(chosen, "derived", f"Trained from `{start}`, whose model card states no licence "
                                   f"(if its weights derive from the official ITER weights, {OFFICIAL_LICENSE} "
                                   "with the S-Lab terms applies instead).")
    if card.get("license_name") == UNCHOSEN_LICENSE_NAME:  # e.g. a stage trained from scratch without --license
        return _chosen_or_unchosen(chosen, "derived", f"Trained from `{start}`, which has no chosen licence.")
    if chosen and chosen != card["license"]:
        return WeightsLicence(chosen, "derived", f"Trained from `{start}` ({card['license']}); the trainer chose "
                              f"this licence (`--license`), which must be one that {card['license']} allows.")
    return WeightsLicence(card["license"], "derived", f"Trained from `{start}`, whose licence these weights keep.",
                          card.get("license_name"))


CITATION = """```bibtex
@inproceedings{chen2024iter,
  title     = {Iterative Token Evaluation and Refinement for Real-World Super-Resolution},
  author    = {Chen, Chaofeng and Zhou, Shangchen and Liao, Liang and Wu, Haoning and Sun, Wenxiu and Yan, Qiong and Lin, Weisi},
  booktitle = {AAAI},
  year      = {2024}
}
```"""


def usage_snippet(repo_or_path: str, scale: int) -> str:
    """How to run the folder: with plain diffusers (the folder carries its code) or with the installed package."""
    return f"""With plain diffusers (this folder carries its code; `trust_remote_code=True` lets diffusers run it):

```python
import torch
from PIL import Image
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{repo_or_path}", trust_remote_code=True)
lq = Image.open("photo.png")
sr = pipe(lq, generator=torch.Generator().manual_seed(123)).images[0]   # x{scale}
sr.save("photo_x{scale}.png")
```

With `pip install iter-diffusers`, `ITERPipeline.from_pretrained("{repo_or_path}")` loads it with the package's own
classes and runs no code from the folder; the call is the same."""


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
    data = ModelCardData(license=OFFICIAL_LICENSE, pipeline_tag="image-to-image", tags=TAGS, inference=False,
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


def card_metadata(source: str | Path, revision: str | None = None) -> dict | None:
    """The YAML metadata of the model card (README.md) of a pipeline folder or Hub id; None where it has no card,
    or the card cannot be fetched or parsed."""
    import yaml
    from huggingface_hub import hf_hub_download, metadata_load
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    try:
        path = Path(source, "README.md") if Path(source).is_dir() else \
            Path(hf_hub_download(str(source), "README.md", revision=revision))
        return (metadata_load(path) or {}) if path.is_file() else None
    except (OSError, ValueError, HfHubHTTPError, EntryNotFoundError, yaml.YAMLError):  # ValueError: not a Hub id
        return None


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
                       license: str | None = None, base_model: str | None = None, datasets: list[str] | None = None,
                       repo_id: str | None = None, images: list[str] | None = None,
                       results_table: str | None = None, licence_text: str | None = None,
                       license_name: str | None = None, weights_origin: str | None = None) -> ModelCard:
    """Card for a pipeline trained with ``examples/train_iter.py``. ``results_table`` (markdown) replaces the
    table of ``metrics``; ``licence_text`` replaces the default licence paragraph. ``metrics`` (validation name ->
    value, e.g. ``{"val/psnr": 24.1}``) also go into the card's ``model-index``. ``license`` follows what the
    weights were made from (:func:`weights_licence` gives it, with the other licence fields); without it the card
    states none (``other``, :data:`UNCHOSEN_LICENSE_NAME`) rather than guess one."""
    scale = pipe.encoder.config.scale_factor
    if license is None:
        license, license_name = "other", UNCHOSEN_LICENSE_NAME
        licence_text = licence_text or "No licence was stated for these weights: ask whoever trained them."
    data = ModelCardData(license=license, license_name=license_name, pipeline_tag="image-to-image",
                         tags=TAGS + ["diffusers-training"], inference=False, base_model=base_model,
                         datasets=datasets, model_name=title, eval_results=_eval_results(metrics, datasets) or None,
                         weights_origin=weights_origin)
    info = "\n".join(f"- {k}: {v}" for k, v in training.items())
    results = "\n".join(f"| {k} | {v} |" for k, v in (metrics or {}).items())
    results = f"| metric | value |\n|---|---|\n{results}" if results else "No validation metrics were recorded."
    if licence_text is None:
        licence_text = f"{license}. {LICENCE_NOTE if license == OFFICIAL_LICENSE else ''}"
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
