"""Checks that a pipeline's parts and settings can work together, with errors that name what disagrees.

Importing this module loads no torch (``iter-sr`` checks its arguments with it before anything heavy is loaded).
"""

from __future__ import annotations

from .options import COLOR_FIXES, OUTPUT_TYPES


def check_components(vqvae, encoder, evaluator, refiner) -> None:
    """Refuse components that cannot run together, naming the two that disagree.

    Only rules whose violation cannot run (or cannot give an s× image) are kept. Swin windows may differ between
    the networks, as in the official code (its VQGAN takes its window from the config while E_l, φ_e and φ_r use
    8): the pipeline pads the input to a multiple of every window (see :meth:`ITERPipeline.token_window`).
    """
    # Token ids flow E_l -> φ_e, φ_r, codebook and φ_r -> φ_e, codebook: every id a producer can emit must index
    # every table that looks it up (a larger id is an IndexError; φ_r's row K is its mask token, not a code).
    tables = {"evaluator": evaluator.config.num_vq_embeddings, "refiner": refiner.config.num_vq_embeddings,
              "vqvae": vqvae.config.num_vq_embeddings}
    for producer, codes in (("encoder", encoder.config.num_vq_embeddings), ("refiner", tables["refiner"])):
        for consumer, size in tables.items():
            if codes > size:
                raise ValueError(f"codebook size K differs: {producer}.num_vq_embeddings = {codes} but "
                                 f"{consumer}.num_vq_embeddings = {size}, so {producer}'s ids {size}..{codes - 1} "
                                 f"cannot be looked up by the {consumer}")
    if encoder.config.vq_scale_factor != vqvae.scale_factor:
        raise ValueError(f"pixels per token differ: encoder.vq_scale_factor = {encoder.config.vq_scale_factor} but "
                         f"the vqvae upsamples by {vqvae.scale_factor} (2^(len(channel_multipliers) - 1)), so "
                         f"the output would not be {encoder.config.scale_factor}× the input")
    if evaluator.config.out_channels != 2:
        raise ValueError("the evaluator scores (wrong, right): out_channels must be 2, got "
                         f"{evaluator.config.out_channels}")


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


def check_mask_threshold(value) -> None:
    """α is a probability: φ_e's "right" probability must reach it for a token to be kept (None: the model's)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"mask_threshold (alpha) must be a number in [0, 1], got {value!r}")


def _check_latents_type(latents) -> None:
    import torch  # only here: the module stays torch-free for the command line

    if not isinstance(latents, torch.Tensor) or latents.dtype not in (torch.int64, torch.int32, torch.int16,
                                                                     torch.uint8):
        raise TypeError("latents must be an integer tensor of token ids (B, h, w), got "
                        f"{latents.dtype if isinstance(latents, torch.Tensor) else type(latents).__name__}")


def check_call_arguments(*, num_inference_steps, output_type, tile_size, tile_padding, latents, tensor_inputs,
                         num_images_per_prompt, callback_on_step_end, mask_threshold, token_temperature,
                         mask_temperature, tile_batch_size, callback_tensor_inputs) -> None:
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
    check_mask_threshold(mask_threshold)
    for name, value in (("token_temperature", token_temperature), ("mask_temperature", mask_temperature)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    if callback_on_step_end is not None and not callable(callback_on_step_end):
        raise TypeError(f"callback_on_step_end must be callable, got {type(callback_on_step_end).__name__}")
    if latents is not None:
        _check_latents_type(latents)
    unknown = [k for k in tensor_inputs or [] if k not in callback_tensor_inputs]
    if unknown:
        raise ValueError(f"callback_on_step_end_tensor_inputs {unknown} are not among {callback_tensor_inputs}")
