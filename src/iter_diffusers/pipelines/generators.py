"""Which random generator draws for which image or tile.

The official code draws every image's and every tile's samples from one global stream, in order. The pipeline
keeps that order by default (``generator`` shared row by row across the tiles of an image); tiles run as a
batch instead get generators of their own, seeded from the image's, so a result does not depend on how the
tiles were batched.
"""

from __future__ import annotations

import torch


def per_image_generators(generator, num_images: int) -> list:
    """One entry per image: the list given, or the one generator (or None) repeated."""
    if isinstance(generator, list):
        if len(generator) != num_images:
            raise ValueError(f"got {len(generator)} generators for {num_images} images; pass one per image")
        return list(generator)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
    return [generator] * num_images


def spawn_generators(generator: torch.Generator | None, count: int) -> list:
    """``count`` independent generators seeded, in order, from ``generator`` (None: the global RNG, ``count`` Nones)."""
    if generator is None:
        return [None] * count
    seeds = torch.randint(0, 2**63 - 1, (count,), generator=generator, device=generator.device).tolist()
    return [torch.Generator(device=generator.device).manual_seed(seed) for seed in seeds]
