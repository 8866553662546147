"""Checks that a pipeline's parts and settings can work together, with errors that name what disagrees."""

from __future__ import annotations

import torch

from .color_fix import COLOR_FIXES
from .image_io import OUTPUT_TYPES


def check_components(vqvae, encoder, evaluator, refiner) -> None:
    """Refuse components that cannot work together, naming the two that disagree."""
    agreements = [
        ("codebook size K", "num_vq_embeddings", [("vqvae", vqvae), ("encoder", encoder), ("evaluator", evaluator),
                                                  ("refiner", refiner)]),
        ("Swin window (tokens)", "swin_window_size", [("encoder", encoder), ("evaluator", evaluator),
                                                      ("refiner", refiner), ("vqvae", vqvae)]),
    ]
    for what, key, named in agreements:
        (first_name, first), *others = named
        for name, component in others:
            if component.config[key] != first.config[key]:
                raise ValueError(f"{what} differs: {first_name}.{key} = {first.config[key]} but {name}.{key} = "
                                 f"{component.config[key]}")
    if encoder.config.vq_scale_factor != vqvae.scale_factor:
        raise ValueError(f"pixels per token differ: encoder.vq_scale_factor = {encoder.config.vq_scale_factor} but "
                         f"the vqvae downsamples by {vqvae.scale_factor} (2^(len(channel_multipliers) - 1))")
    if evaluator.config.out_channels != 2:
        raise ValueError("the evaluator scores (wrong, right): out_channels must be 2, got "
                         f"{evaluator.config.out_channels}")
    if refiner.mask_token_id is None or refiner.config.out_channels != refiner.config.num_vq_embeddings:
        raise ValueError(f"the refiner needs a mask token and out_channels = K = {refiner.config.num_vq_embeddings}, "
                         f"got use_mask_token={refiner.config.use_mask_token}, "
                         f"out_channels={refiner.config.out_channels}")


def check_color_fix(method, levels) -> None:
    if method is not None and method not in COLOR_FIXES:
        raise ValueError(f"color_fix must be one of {COLOR_FIXES} or None ('none' in a call), got {method!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"color_fix_levels must be a positive int, got {levels!r}")


def resolve_color_fix(config, method, levels) -> tuple[str | None, int]:
    """A call's colour fix: its own arguments, or the pipeline's configured defaults where None ("none": off)."""
    method = config.color_fix if method is None else (None if method == "none" else method)
    levels = config.color_fix_levels if levels is None else levels
    check_color_fix(method, levels)
    return method, levels


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_call_arguments(num_inference_steps, output_type, tile_size, tile_padding, latents, tensor_inputs,
                         num_images_per_prompt, callback_on_step_end, token_temperature, mask_temperature,
                         tile_batch_size, callback_tensor_inputs) -> None:
    """``ITERPipeline.check_inputs``: every argument of a call that no later step would refuse clearly."""
    for name, value in (("num_inference_steps", num_inference_steps), ("num_images_per_prompt", num_images_per_prompt),
                        ("tile_batch_size", tile_batch_size)):
        if not _positive_int(value):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if tile_size not in (None, "auto") and not _positive_int(tile_size):
        raise ValueError(f"tile_size must be None, 'auto' or a positive int, got {tile_size!r}")
    if isinstance(tile_padding, bool) or not isinstance(tile_padding, int) or tile_padding < 0:
        raise ValueError(f"tile_padding must be a non-negative int, got {tile_padding!r}")
    for name, value in (("token_temperature", token_temperature), ("mask_temperature", mask_temperature)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    if callback_on_step_end is not None and not callable(callback_on_step_end):
        raise TypeError(f"callback_on_step_end must be callable, got {type(callback_on_step_end).__name__}")
    if latents is not None and (not isinstance(latents, torch.Tensor) or latents.dtype not in
                                (torch.int64, torch.int32, torch.int16, torch.uint8)):
        raise TypeError("latents must be an integer tensor of token ids (B, h, w), got "
                        f"{latents.dtype if isinstance(latents, torch.Tensor) else type(latents).__name__}")
    unknown = [k for k in tensor_inputs or [] if k not in callback_tensor_inputs]
    if unknown:
        raise ValueError(f"callback_on_step_end_tensor_inputs {unknown} are not among {callback_tensor_inputs}")
