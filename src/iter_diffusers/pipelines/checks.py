"""Checks that a pipeline's parts and settings can work together, with errors that name what disagrees."""

from __future__ import annotations

from .color_fix import COLOR_FIXES


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
        raise ValueError(f"the evaluator scores (wrong, right): out_channels must be 2, got {evaluator.config.out_channels}")
    if refiner.mask_token_id is None or refiner.config.out_channels != refiner.config.num_vq_embeddings:
        raise ValueError(f"the refiner needs a mask token and out_channels = K = {refiner.config.num_vq_embeddings}, "
                         f"got use_mask_token={refiner.config.use_mask_token}, out_channels={refiner.config.out_channels}")


def check_color_fix(method, levels) -> None:
    if method is not None and method not in COLOR_FIXES:
        raise ValueError(f"color_fix must be one of {COLOR_FIXES} or None ('none' in a call), got {method!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"color_fix_levels must be a positive int, got {levels!r}")
