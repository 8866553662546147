"""ITERPipeline: real-world super-resolution by iterative token evaluation and refinement."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput

from ..models import ITERDistortionRemovalEncoder, ITERRefinementTransformer, ITERTokenEvaluator, ITERVQModel
from ..schedulers import MaskedTokenScheduler
from .color_fix import COLOR_FIXES, apply_color_fix
from .image_io import OUTPUT_TYPES, mirror_pad, postprocess, to_image_tensors

#: ``tile_size="auto"`` keeps one tile's estimated activation memory under this many bytes (and under a quarter of
#: the free memory of the device). 1 GiB holds a whole 800×600 input of the paper-size model on a GPU, and keeps the
#: bundled model under 2 GB of peak RSS on any input on a CPU.
AUTO_TILE_BUDGET = 1 << 30


@dataclass
class ITERPipelineOutput(BaseOutput):
    """
    images: the super-resolved images (list of PIL, (B, sH, sW, 3) numpy, (B, 3, sH, sW) tensor, or the final
        token ids for ``output_type="latent"``); a list when the inputs have different sizes.
    intermediate_images: with ``return_intermediates=True``, one entry per refinement step (after that step),
        each like ``images``.
    intermediate_masks: with ``return_intermediates=True``, one entry per step: the keep-mask used at that step
        per image, (h, w) float tensors at token resolution (1 = kept, 0 = re-predicted; B for skipped steps).
    """

    images: Any
    intermediate_images: list | None = None
    intermediate_masks: list | None = None


@dataclass
class _RunResult:
    images: torch.Tensor  # (B, 3, sH, sW) float32, cropped
    tokens: torch.Tensor  # (B, h, w) final token ids of the padded input
    step_tokens: list[torch.Tensor] | None = None
    step_masks: list[torch.Tensor] | None = None


class ITERPipeline(DiffusionPipeline):
    r"""ITER super-resolution (Chen et al., AAAI 2024).

    Components:
        vqvae ([`ITERVQModel`]): the frozen HQ Swin-VQGAN; its codebook and decoder render tokens.
        encoder ([`ITERDistortionRemovalEncoder`]): E_l, LQ image -> codebook logits; argmax = S_l.
        evaluator ([`ITERTokenEvaluator`]): φ_e, judges which tokens are right.
        refiner ([`ITERRefinementTransformer`]): φ_r, re-predicts the masked tokens given S_l.
        scheduler ([`MaskedTokenScheduler`]): the masked-token schedule and sampler.
        color_fix (`str`, *optional*): the default colour / low-frequency correction from the input
            (``"wavelet"``, ``"adain"`` or None; see :mod:`.color_fix`). Stored in ``model_index.json`` so each
            model folder carries its own default: None for the converted official weights (exact parity).
        color_fix_levels (`int`, defaults to 5): wavelet levels; the input's band below about 2^(levels+1)
            output pixels replaces the restoration's.
        num_inference_steps (`int`, defaults to 8): the default T of ``__call__`` for this model folder (official 8).
    """

    model_cpu_offload_seq = "encoder->evaluator->refiner->vqvae"
    _callback_tensor_inputs = ["latents", "kept_mask", "condition_tokens", "trusted_mask"]

    def __init__(
        self,
        vqvae: ITERVQModel,
        encoder: ITERDistortionRemovalEncoder,
        evaluator: ITERTokenEvaluator,
        refiner: ITERRefinementTransformer,
        scheduler: MaskedTokenScheduler,
        color_fix: str | None = None,
        color_fix_levels: int = 5,
        num_inference_steps: int = 8,
    ):
        super().__init__()
        _check_components(vqvae, encoder, evaluator, refiner)
        self.register_modules(vqvae=vqvae, encoder=encoder, evaluator=evaluator, refiner=refiner, scheduler=scheduler)
        _check_color_fix(color_fix, color_fix_levels)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        self.register_to_config(color_fix=color_fix, color_fix_levels=color_fix_levels,
                                num_inference_steps=num_inference_steps)

    @property
    def upscale_factor(self) -> int:
        """s: output pixels per input pixel along each side (from E_l's config, its only home)."""
        return self.encoder.config.scale_factor

    @property
    def num_timesteps(self) -> int | None:
        return getattr(self, "_num_timesteps", None)  # None before the first call

    @property
    def interrupt(self) -> bool:
        return getattr(self, "_interrupt", False)

    # ------------------------------------------------------------------ checks
    def check_inputs(self, num_inference_steps, output_type, tile_size, tile_padding, latents,
                     return_intermediates, callback_on_step_end_tensor_inputs, num_images_per_prompt=1,
                     callback_on_step_end=None, token_temperature=None, mask_temperature=None):
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) \
                or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive int, got {num_images_per_prompt!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if tile_size not in (None, "auto") and (
            isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1
        ):
            raise ValueError(f"tile_size must be None, 'auto' or a positive int, got {tile_size!r}")
        for name, value in (("token_temperature", token_temperature), ("mask_temperature", mask_temperature)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"callback_on_step_end must be callable, got {type(callback_on_step_end).__name__}")
        if latents is not None and (not isinstance(latents, torch.Tensor) or latents.dtype not in
                                    (torch.int64, torch.int32, torch.int16, torch.uint8)):
            raise TypeError("latents must be an integer tensor of token ids (B, h, w), got "
                            f"{latents.dtype if isinstance(latents, torch.Tensor) else type(latents).__name__}")
        if not isinstance(tile_padding, int) or tile_padding < 0:
            raise ValueError(f"tile_padding must be a non-negative int, got {tile_padding!r}")
        unknown = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} are not among {self._callback_tensor_inputs}"
            )

    @staticmethod
    def _per_image_generators(generator, num_images: int) -> list:
        if isinstance(generator, list):
            if len(generator) != num_images:
                raise ValueError(f"got {len(generator)} generators for {num_images} images; pass one per image")
            return list(generator)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
        return [generator] * num_images

    def _check_latents(self, latents: torch.Tensor, image: torch.Tensor, num_inputs: int, per_prompt: int):
        """Initial token ids for the padded token grid of ``image``: (num_inputs or num_inputs·per_prompt, h, w)."""
        per_token = self.encoder.pixels_per_token
        grid = tuple(side // per_token for side in self.padded_size(*image.shape[1:]))
        allowed = {num_inputs, num_inputs * per_prompt}
        if latents.ndim != 3 or tuple(latents.shape[1:]) != grid or latents.shape[0] not in allowed:
            raise ValueError(
                f"latents must have shape (B, {grid[0]}, {grid[1]}) with B in {sorted(allowed)} for this input, "
                f"got {tuple(latents.shape)}"
            )
        num_codes = self.encoder.config.num_vq_embeddings
        if latents.min().item() < 0 or latents.max().item() >= num_codes:
            raise ValueError(f"latents must be token ids in [0, {num_codes}), got [{latents.min()}, {latents.max()}]")
        if latents.shape[0] != num_inputs * per_prompt:
            latents = latents.repeat_interleave(per_prompt, dim=0)
        return latents

    def activation_bytes_per_pixel(self) -> int:
        """Estimated peak bytes per LQ pixel of a run: the decoder's full-resolution layers dominate, with about six
        live activations of their width (measured: 12 KB per LQ pixel for the bundled model, fp32)."""
        config = self.vqvae.config
        full_resolution_width = max(config.base_channels * m for m in config.channel_multipliers[:2])
        itemsize = torch.finfo(self.vqvae.dtype).bits // 8
        return 6 * full_resolution_width * itemsize * self.upscale_factor**2

    def auto_tile_shape(self, height: int, width: int, tile_padding: int) -> tuple[int, int] | None:
        """``tile_size="auto"``: None when the whole (padded) input fits the memory budget, else the tile shape
        (LQ pixels) of the fewest equal tiles whose padded runs fit it."""
        budget = min(AUTO_TILE_BUDGET, _free_memory(self._execution_device) // 4)
        max_pixels = max(budget // self.activation_bytes_per_pixel(), 64 * 64)

        def run_pixels(tile_h: int, tile_w: int, pad: int) -> int:
            run_h, run_w = self.padded_size(min(tile_h + 2 * pad, height), min(tile_w + 2 * pad, width))
            return run_h * run_w

        if run_pixels(height, width, 0) <= max_pixels:
            return None
        best = None  # (tile count, pixels per run, shape)
        for rows in range(1, height + 1):
            if best is not None and rows > best[0]:
                break
            tile_h = math.ceil(height / rows)
            if run_pixels(tile_h, 1, tile_padding) > max_pixels:
                continue
            low, high = 1, width  # fewest columns that fit: the run size shrinks as columns are added
            while low < high:
                middle = (low + high) // 2
                low, high = (low, middle) if run_pixels(tile_h, math.ceil(width / middle), tile_padding) <= max_pixels \
                    else (middle + 1, high)
            shape = (tile_h, math.ceil(width / low))
            best = min(best or (math.inf,), (rows * low, run_pixels(*shape, tile_padding), shape))
        if best is None:  # the padding alone exceeds the budget: the smallest useful tiles
            side = self.encoder.pad_multiple
            return min(side, height), min(side, width)
        return best[2]

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The official padding: up to the next multiple of the token window, always at least one pixel
        (a whole window when the side is already a multiple)."""
        multiple = self.encoder.pad_multiple
        return (height // multiple + 1) * multiple, (width // multiple + 1) * multiple

    # ------------------------------------------------------------------ the algorithm
    def _run(
        self,
        lq: torch.Tensor,
        generators: list,
        num_inference_steps: int,
        mask_threshold: float | None,
        token_temperature: float | None,
        mask_temperature: float | None,
        latents: torch.Tensor | None,
        return_intermediates: bool,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs,
        progress_bar,
        color_fix: tuple[str | None, int] = (None, 5),
    ) -> _RunResult:
        """Super-resolve a batch of same-size LQ images (B, 3, H, W) in [0, 1]: pad, E_l, refine, decode, crop,
        colour fix (per tile when tiled: memory stays bounded, and the tile padding gives the fix its context)."""
        device = self._execution_device
        batch, _, height, width = lq.shape
        padded = mirror_pad(lq, *self.padded_size(height, width))
        padded = padded.to(device=device, dtype=self.encoder.dtype)

        if latents is None:
            lq_tokens = self.encoder(padded).logits.argmax(dim=1)  # S_l
        else:
            lq_tokens = latents.to(device=device, dtype=torch.long)
        _, token_h, token_w = lq_tokens.shape

        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps, device=device)
        evaluator_logits = self.evaluator(lq_tokens, lq_tokens).logits
        trusted = scheduler.trusted_mask(evaluator_logits, mask_threshold)  # B
        start_steps = scheduler.start_steps(trusted)  # (B,) on the CPU: which steps each image runs
        tokens, kept = lq_tokens.clone(), trusted.clone()
        step_tokens, step_masks = [], []

        for i, t in enumerate(scheduler.timesteps):
            if self.interrupt:
                break
            active, resuming = start_steps <= i, start_steps < i  # run this step / ran an earlier one
            on, grow = active.to(device), resuming.to(device)
            if resuming.any():  # the first executed step keeps B; later ones grow the keep-mask
                kept[grow] = scheduler.sample_mask(evaluator_logits[grow], t, kept[grow],
                                                   _select(generators, resuming), mask_temperature)
            if active.any():
                logits = self.refiner(tokens[on], lq_tokens[on], visible_mask=kept[on], trusted_mask=trusted[on]).logits
                tokens[on] = scheduler.step(logits, t, tokens[on], _select(generators, active),
                                            token_temperature).prev_sample
            if callback_on_step_end is not None:
                available = {"latents": tokens, "kept_mask": kept, "condition_tokens": lq_tokens, "trusted_mask": trusted}
                callback_kwargs = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                tokens = callback_outputs.pop("latents", tokens)
                kept = callback_outputs.pop("kept_mask", kept)
            # φ_e judges the tokens the next step starts from (after the callback, which may replace them);
            # after the last step it would be wasted.
            if active.any() and i < num_inference_steps - 1:
                evaluator_logits[on] = self.evaluator(tokens[on], lq_tokens[on]).logits.to(evaluator_logits.dtype)
            if return_intermediates:
                step_tokens.append(tokens.clone())
                step_masks.append(torch.where(on[:, None, None], kept, trusted).cpu())
            progress_bar.update()

        crop = (slice(None), slice(None), slice(0, height * self.upscale_factor), slice(0, width * self.upscale_factor))
        images = self.vqvae.decode(tokens).sample[crop].float()
        images = apply_color_fix(images, lq, *color_fix)
        return _RunResult(images, tokens, step_tokens or None, step_masks or None)

    def _run_tiled(self, lq, generator, tile_shape, tile_padding, tile_blending, run_kwargs) -> torch.Tensor:
        """Restore one image (1, 3, H, W) tile by tile (Real-ESRGAN's scheme, the official ``test_tile``).

        Tiles are visited row by row and share the image's generator in that order. Without blending the centre
        of each tile is pasted (the official behaviour); with blending each tile contributes its padded area with
        weights that ramp linearly across the 2·tile_padding overlap, so no seam shows.
        """
        s = self.upscale_factor
        _, _, height, width = lq.shape
        tile_h, tile_w = tile_shape
        out = torch.zeros(1, 3, height * s, width * s)
        weight = torch.zeros(1, 1, height * s, width * s)
        for y0 in range(0, height, tile_h):
            for x0 in range(0, width, tile_w):
                y1, x1 = min(y0 + tile_h, height), min(x0 + tile_w, width)
                py0, px0 = max(y0 - tile_padding, 0), max(x0 - tile_padding, 0)
                py1, px1 = min(y1 + tile_padding, height), min(x1 + tile_padding, width)
                tile = self._run(lq[:, :, py0:py1, px0:px1], [generator], **run_kwargs).images.cpu()
                if not tile_blending:
                    core = tile[:, :, (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s]
                    out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = core
                    continue
                ramp_y = _overlap_ramp(py0, py1, y0, y1, height, tile_padding, s)
                ramp_x = _overlap_ramp(px0, px1, x0, x1, width, tile_padding, s)
                w = ramp_y[:, None] * ramp_x[None, :]
                out[:, :, py0 * s : py1 * s, px0 * s : px1 * s] += tile * w
                weight[:, :, py0 * s : py1 * s, px0 * s : px1 * s] += w
        return out if not tile_blending else out / weight.clamp(min=1e-12)

    # ------------------------------------------------------------------ entry point
    @torch.no_grad()
    def __call__(
        self,
        image=None,
        num_inference_steps: int | None = None,
        mask_threshold: float | None = None,
        token_temperature: float | None = None,
        mask_temperature: float | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        tile_size: int | str | None = "auto",
        tile_padding: int = 16,
        tile_blending: bool = True,
        return_intermediates: bool = False,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        color_fix: str | None = None,
        color_fix_levels: int | None = None,
    ):
        r"""Super-resolve ``image`` by the factor s of the loaded weights (x2 or x4).

        Args:
            image: PIL image(s), numpy uint8/uint16/float HW(C) or BHWC, torch float CHW or BCHW in [0, 1], or a
                list of these, of any sizes. Grayscale is replicated to RGB; an alpha channel is dropped.
            num_inference_steps: T, refinement steps (default: ``pipe.config.num_inference_steps``, official 8).
            mask_threshold: α, φ_e's trust threshold (default: the scheduler's, 0.7).
            token_temperature / mask_temperature: sampling temperatures (default: the scheduler's, 1.0).
            num_images_per_prompt: samples per input image (they differ through the generator).
            generator: one generator, or one per output image, for every random draw.
            latents: initial token ids S_l (B, h, w) replacing E_l's (untiled same-size batches only); (h, w) is the
                padded input's token grid, B the number of inputs (repeated ``num_images_per_prompt`` times) or of
                outputs.
            tile_size: LQ tile side for tiled inference; ``None`` never tiles; ``"auto"`` tiles only when a whole
                run would need more than ``AUTO_TILE_BUDGET`` (1 GiB, at most a quarter of the free memory) by
                :meth:`activation_bytes_per_pixel`, with the fewest equal tiles that fit (see
                :meth:`auto_tile_shape`). The official script tiles with 256-pixel tiles from 720² pixels on.
            tile_padding: LQ pixels of context around each tile (official 16).
            tile_blending: blend overlapping tiles (default); ``False`` pastes tile centres (official).
            return_intermediates: also return the image and the keep-mask after every step.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (final token ids).
            return_dict: return an [`ITERPipelineOutput`] instead of a tuple.
            callback_on_step_end: called as ``fn(pipe, step, timestep, tensors)`` after every step;
                may return replacements for ``latents`` (token ids) and ``kept_mask``.
            callback_on_step_end_tensor_inputs: names from ``_callback_tensor_inputs`` passed to the callback.
            color_fix: ``"wavelet"``, ``"adain"`` or ``"none"``; None uses the pipeline's configured default
                (``pipe.config.color_fix``). Applied to the final and the per-step images, not to token outputs.
            color_fix_levels: wavelet levels (default: ``pipe.config.color_fix_levels``).
        """
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if num_inference_steps is None:
            num_inference_steps = self.config.num_inference_steps
        self.check_inputs(num_inference_steps, output_type, tile_size, tile_padding, latents,
                          return_intermediates, callback_on_step_end_tensor_inputs, num_images_per_prompt,
                          callback_on_step_end, token_temperature, mask_temperature)
        if image is None:
            raise ValueError("image is required")
        color_fix = self.config.color_fix if color_fix is None else (None if color_fix == "none" else color_fix)
        color_fix_levels = self.config.color_fix_levels if color_fix_levels is None else color_fix_levels
        _check_color_fix(color_fix, color_fix_levels)
        inputs = to_image_tensors(image)
        images = [x for x in inputs for _ in range(num_images_per_prompt)]
        generators = self._per_image_generators(generator, len(images))
        self._interrupt = False
        self._num_timesteps = num_inference_steps

        tile_for = {}
        for n, x in enumerate(images):
            if tile_size == "auto":
                tile_for[n] = self.auto_tile_shape(*x.shape[1:], tile_padding)
            else:
                tile_for[n] = None if tile_size is None else (tile_size, tile_size)
        if (return_intermediates or latents is not None) and any(v is not None for v in tile_for.values()):
            raise ValueError("return_intermediates and latents are not supported with tiling; pass tile_size=None")
        if output_type == "latent" and any(v is not None for v in tile_for.values()):
            raise ValueError('output_type="latent" is not available for tiled inference; pass tile_size=None')

        # Same-size untiled images run together; every rule is per image, so grouping never changes results.
        groups: dict[tuple, list[int]] = {}
        for n, x in enumerate(images):
            key = ("tile", n) if tile_for[n] is not None else ("batch", tuple(x.shape))
            groups.setdefault(key, []).append(n)
        if latents is not None:
            if len(groups) != 1:
                raise ValueError("latents can only be given for a batch of same-size images")
            latents = self._check_latents(latents, images[0], len(inputs), num_images_per_prompt)

        run_kwargs = dict(
            num_inference_steps=num_inference_steps,
            mask_threshold=mask_threshold,
            token_temperature=token_temperature,
            mask_temperature=mask_temperature,
            latents=latents,
            return_intermediates=return_intermediates,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            color_fix=(color_fix, color_fix_levels),
        )
        total_steps = sum(
            num_inference_steps * (_num_tiles(images[m[0]], tile_for[m[0]]) if key[0] == "tile" else 1)
            for key, m in groups.items()
        )
        results: list = [None] * len(images)
        with self.progress_bar(total=total_steps) as progress_bar:
            run_kwargs["progress_bar"] = progress_bar
            for key, members in groups.items():
                if key[0] == "tile":
                    n = members[0]
                    sr = self._run_tiled(images[n][None], generators[n], tile_for[n], tile_padding,
                                         tile_blending, run_kwargs)
                    results[n] = _RunResult(images=sr, tokens=None)
                    continue
                run = self._run(torch.stack([images[n] for n in members]), [generators[n] for n in members],
                                **run_kwargs)
                for j, n in enumerate(members):
                    results[n] = _RunResult(
                        run.images[j : j + 1],
                        run.tokens[j : j + 1],
                        None if run.step_tokens is None else [s[j : j + 1] for s in run.step_tokens],
                        None if run.step_masks is None else [m[j] for m in run.step_masks],
                    )

        output = self._format(results, output_type, return_intermediates, images, (color_fix, color_fix_levels))
        self.maybe_free_model_hooks()
        if not return_dict:
            return output
        return ITERPipelineOutput(*output)

    def _format(self, results: list[_RunResult], output_type: str, return_intermediates: bool, inputs,
                color_fix: tuple[str | None, int]):
        same_size = len({tuple(x.shape) for x in inputs}) == 1

        def collect(tensors: list[torch.Tensor]):
            if output_type == "pil":
                return [im for t in tensors for im in postprocess(t, "pil")]
            if output_type == "pt":  # tiles are assembled on the CPU: every "pt" output is on the execution device
                tensors = [t.to(self._execution_device) for t in tensors]
            if same_size:
                return postprocess(torch.cat(tensors), output_type)
            return [postprocess(t, output_type)[0] for t in tensors]

        def collect_tokens(tokens: list[torch.Tensor]):
            return torch.cat(tokens) if same_size else [t[0] for t in tokens]

        if output_type == "latent":
            images = collect_tokens([r.tokens for r in results])
        else:
            images = collect([r.images for r in results])
        if not return_intermediates:
            return (images, None, None)
        s = self.upscale_factor
        num_steps = len(results[0].step_tokens)
        step_images = []
        for step in range(num_steps):
            if output_type == "latent":  # the token map after each step, like ``images``
                step_images.append(collect_tokens([r.step_tokens[step] for r in results]))
                continue
            decoded = []
            for r, x in zip(results, inputs):
                crop = (..., slice(0, x.shape[1] * s), slice(0, x.shape[2] * s))
                step_image = self.vqvae.decode(r.step_tokens[step]).sample[crop].float()
                decoded.append(apply_color_fix(step_image, x[None], *color_fix))
            step_images.append(collect(decoded))
        step_masks = [[r.step_masks[step] for r in results] for step in range(num_steps)]
        return (images, step_images, step_masks)


def _check_components(vqvae, encoder, evaluator, refiner) -> None:
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


def _select(generators: list, which: torch.Tensor) -> list:
    """The generators of the images flagged in the boolean (B,) CPU tensor ``which``."""
    return [generators[b] for b in which.nonzero().flatten().tolist()]


def _check_color_fix(method, levels) -> None:
    if method is not None and method not in COLOR_FIXES:
        raise ValueError(f"color_fix must be one of {COLOR_FIXES}, 'none' or None, got {method!r}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"color_fix_levels must be a positive int, got {levels!r}")


def _num_tiles(image: torch.Tensor, tile_shape: tuple[int, int]) -> int:
    return math.ceil(image.shape[1] / tile_shape[0]) * math.ceil(image.shape[2] / tile_shape[1])


def _free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the GPU's own memory for CUDA, the host's available memory otherwise."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not POSIX: rely on the budget alone
        return AUTO_TILE_BUDGET * 4


def _overlap_ramp(p0: int, p1: int, c0: int, c1: int, size: int, pad: int, scale: int) -> torch.Tensor:
    """Blend weights along one axis for a tile with core [c0, c1) and padded extent [p0, p1) (LQ pixels).

    Across each interior core boundary b the weight ramps linearly over [b − pad, b + pad), so that the two
    tiles meeting there sum to one; it is 1 elsewhere. Returned at output resolution.
    """
    u = (torch.arange(p0 * scale, p1 * scale, dtype=torch.float32) + 0.5) / scale  # output pixel centres, LQ units
    w = torch.ones_like(u)
    if pad == 0:
        return w
    if c0 > 0:
        w = torch.minimum(w, ((u - (c0 - pad)) / (2 * pad)).clamp(0, 1))
    if c1 < size:
        w = torch.minimum(w, (((c1 + pad) - u) / (2 * pad)).clamp(0, 1))
    return w
