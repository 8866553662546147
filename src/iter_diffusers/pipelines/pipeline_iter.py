"""ITERPipeline: real-world super-resolution by iterative token evaluation and refinement."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from diffusers import DiffusionPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.utils import BaseOutput, logging, replace_example_docstring

from ..models import (ITERDistortionRemovalEncoder, ITERRefinementTransformer, ITERTokenEvaluator,
                      ITERUpsamplingEncoder, ITERVQModel)
from ..schedulers import MaskedTokenScheduler
from . import tiling
from .checks import check_call_arguments, check_color_fix, check_components, resolve_color_fix
from .color_fix import apply_color_fix
from .generators import per_image_generators, spawn_generators
from .hub_code import HubCodeMixin
from .image_io import mirror_pad, postprocess, to_image_tensors

logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from PIL import Image
        >>> from iter_diffusers import DEMO_MODEL_PATH, ITERPipeline

        >>> pipe = ITERPipeline.from_pretrained(DEMO_MODEL_PATH)  # or a converted official folder
        >>> image = Image.open("photo.png")
        >>> result = pipe(image, generator=torch.Generator().manual_seed(123))
        >>> result.images[0].save("photo_x4.png")

        >>> # the image and keep-mask of every step that ran: at most T, fewer when φ_e already trusts enough
        >>> # tokens of S_l for the first steps (the adaptive start skips them)
        >>> result = pipe(image, generator=torch.Generator().manual_seed(123), return_intermediates=True)
        >>> len(result.intermediate_images) <= pipe.config.num_inference_steps
        True
        ```
"""


@dataclass
class ITERPipelineOutput(BaseOutput):
    """
    images: the super-resolved images (list of PIL, (B, sH, sW, 3) numpy, (B, 3, sH, sW) tensor, or the final
        token ids for ``output_type="latent"``); a list when the inputs have different sizes.
    intermediate_images: with ``return_intermediates=True``, one entry per refinement step that ran (after that
        step), each like ``images``; steps that the adaptive start skips for every image are not steps and have
        none (an empty list when φ_e trusts every token).
    intermediate_masks: with ``return_intermediates=True``, one entry per step that ran: the keep-mask used at that
        step per image, (h, w) float tensors at token resolution (1 = kept, 0 = re-predicted; B for an image of
        the batch that skips the step).
    """

    images: Any
    intermediate_images: list | None = None
    intermediate_masks: list | None = None


@dataclass
class _RunResult:
    images: torch.Tensor  # (B, 3, sH, sW) float32, cropped
    tokens: torch.Tensor  # (B, h, w) final token ids of the padded input
    # with intermediates: per step of the schedule, the tokens and keep-mask after it, and whether it ran
    step_tokens: list[torch.Tensor] | None = None
    step_masks: list[torch.Tensor] | None = None
    step_ran: list[bool] | None = None

    def select(self, j: int) -> "_RunResult":
        """Image ``j`` of a batched run, as a run of its own."""
        return _RunResult(
            self.images[j : j + 1],
            self.tokens[j : j + 1],
            None if self.step_tokens is None else [s[j : j + 1] for s in self.step_tokens],
            None if self.step_masks is None else [m[j] for m in self.step_masks],
            self.step_ran,
        )


class ITERPipeline(HubCodeMixin, DiffusionPipeline):
    r"""ITER super-resolution (Chen et al., AAAI 2024).

    Components:
        vqvae ([`ITERVQModel`]): the frozen HQ Swin-VQGAN; its codebook and decoder render tokens.
        encoder ([`ITERDistortionRemovalEncoder`] or [`ITERUpsamplingEncoder`]): E_l, LQ image -> codebook
            logits; argmax = S_l. The first is the official design; the second encodes the bicubic upscale with
            the VQGAN encoder's architecture (the bundled demo model's).
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
        encoder: ITERDistortionRemovalEncoder | ITERUpsamplingEncoder,
        evaluator: ITERTokenEvaluator,
        refiner: ITERRefinementTransformer,
        scheduler: MaskedTokenScheduler,
        color_fix: str | None = None,
        color_fix_levels: int = 5,
        num_inference_steps: int = 8,
    ):
        super().__init__()
        check_components(vqvae, encoder, evaluator, refiner)
        self.register_modules(vqvae=vqvae, encoder=encoder, evaluator=evaluator, refiner=refiner, scheduler=scheduler)
        check_color_fix(color_fix, color_fix_levels)
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
                     callback_on_step_end_tensor_inputs, num_images_per_prompt=1, callback_on_step_end=None,
                     mask_threshold=None, token_temperature=None, mask_temperature=None, tile_batch_size=1):
        """Refuse unusable ``__call__`` arguments with a message naming the argument (see :mod:`.checks`)."""
        check_call_arguments(
            num_inference_steps=num_inference_steps, output_type=output_type, tile_size=tile_size,
            tile_padding=tile_padding, latents=latents, tensor_inputs=callback_on_step_end_tensor_inputs,
            num_images_per_prompt=num_images_per_prompt, callback_on_step_end=callback_on_step_end,
            mask_threshold=mask_threshold, token_temperature=token_temperature, mask_temperature=mask_temperature,
            tile_batch_size=tile_batch_size, callback_tensor_inputs=self._callback_tensor_inputs,
        )

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

    def activation_bytes_per_pixel(self, dtype: torch.dtype = torch.float32) -> int:
        """Estimated peak bytes per LQ pixel of a run in ``dtype``: the decoder's full-resolution layers dominate,
        with about six live activations of their width (measured: 12 KB per LQ pixel for a 32-wide model, fp32).

        Widths under ``tiling.MIN_ESTIMATED_WIDTH`` count as that: what does not narrow with them (the token
        logits, the engine's buffers) then weighs as much. Measured on the 800×600 default path with a 16-wide VQGAN
        and E_l (OpenVINO): runs of 131 k LQ pixels peaked at 2.34 GB, runs of 77 k (the 32-wide plan) at 1.63 GB.
        """
        config = self.vqvae.config
        widths = [config.base_channels * m for m in config.channel_multipliers[:2]]
        full_resolution_width = max(tiling.MIN_ESTIMATED_WIDTH, *widths)
        itemsize = torch.finfo(dtype).bits // 8
        return 6 * full_resolution_width * itemsize * self.upscale_factor**2

    def auto_tile_shape(self, height: int, width: int, tile_padding: int,
                        tile_batch_size: int = 1) -> tuple[int, int] | None:
        """``tile_size="auto"``: None when the whole (padded) input fits ``tiling.AUTO_TILE_BUDGET``, else the tile
        shape (LQ pixels) of the fewest equal tiles whose padded runs, ``tile_batch_size`` at a time, fit it (see
        :mod:`.tiling`).

        The plan depends on the input size, the architecture and these arguments only: tiling changes the
        picture (φ's SE gates pool over the whole map), so it must not follow the machine's free memory or the
        dtype. Its estimate is taken at fp32; :meth:`warn_if_memory_short` says when a plan will not fit.
        """
        max_pixels = max(tiling.AUTO_TILE_BUDGET // (self.activation_bytes_per_pixel() * tile_batch_size), 64 * 64)
        run_h, run_w = self.padded_size(height, width)
        if run_h * run_w <= max_pixels:
            return None
        shape = tiling.fewest_equal_tiles(height, width, tile_padding, max_pixels, self.padded_size)
        if shape is None:  # the padding alone exceeds the budget: the smallest useful tiles
            side = self.pad_multiple
            return min(side, height), min(side, width)
        return shape

    def warn_if_memory_short(self, run_pixels: int, tile_padding: int, tile_batch_size: int = 1) -> None:
        """Say before a run whose largest step (``run_pixels`` padded LQ pixels at once) will not fit the memory
        that is available now, and which ``tile_size`` would; the plan itself is never changed by it."""
        per_pixel = self.activation_bytes_per_pixel(self.vqvae.dtype)
        available = tiling.available_memory(self._execution_device)
        if available is None or run_pixels * per_pixel <= available:
            return
        side = self.fitting_tile_size(available // (per_pixel * tile_batch_size), tile_padding)
        logger.warning(
            f"this run needs about {run_pixels * per_pixel / 2**30:.1f} GiB for its activations but "
            f"{available / 2**30:.1f} GiB is available on {self._execution_device}: it may run out of memory. "
            f"Pass tile_size={side} (iter-sr --tile {side}) to fit; the result then changes, as tiling does"
        )

    def fitting_tile_size(self, max_pixels: int, tile_padding: int) -> int:
        """The largest square tile side (a multiple of :attr:`pad_multiple`) whose padded run with its context
        holds at most ``max_pixels`` LQ pixels; the smallest tile when none does."""
        side = self.pad_multiple
        while math.prod(self.padded_size(side + self.pad_multiple + 2 * tile_padding,
                                         side + self.pad_multiple + 2 * tile_padding)) <= max_pixels:
            side += self.pad_multiple
        return side

    @property
    def token_window(self) -> int:
        """Token-map sides must be multiples of this: the least common multiple of the Swin windows of E_l, φ_e,
        φ_r and the VQGAN (8 in the official release; the official VQGAN's window is free, the others are 8)."""
        windows = [m.config.swin_window_size for m in (self.encoder, self.evaluator, self.refiner, self.vqvae)]
        return math.lcm(*windows)

    @property
    def pad_multiple(self) -> int:
        """LQ sides are padded to multiples of this: :attr:`token_window` tokens of E_l's pixels per token."""
        return self.encoder.pixels_per_token * self.token_window

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The official padding: up to the next multiple of :attr:`pad_multiple`, always at least one pixel
        (a whole multiple when the side is already one). Where every window divides E_l's, the multiple is the
        official one; otherwise it is the smallest that every network can run on, and it gives the official
        padding on every input the official code can run."""
        multiple = self.pad_multiple
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

        # 1. timesteps, and the adaptive start: φ_e judges S_l; the tokens it trusts (B) are kept, and every step
        #    whose schedule would keep fewer tokens is skipped (per image)
        scheduler = self.scheduler
        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        evaluator_logits = self.evaluator(lq_tokens, lq_tokens).logits
        trusted = scheduler.trusted_mask(evaluator_logits, mask_threshold)  # B
        scheduler.set_trusted_mask(trusted)
        latents, kept = lq_tokens.clone(), trusted.clone()
        step_tokens, step_masks, step_ran = [], [], []

        # 2. the refinement loop
        for i, t in enumerate(timesteps):
            if self.interrupt:
                break
            running = scheduler.executing(t)  # (B,) on the CPU: the images whose step t runs
            on = running.to(device)
            # the keep-mask of step t: B at an image's first executed step, then grown ∝ φ_e's judgement
            kept = scheduler.prepare_keep_mask(kept, t, evaluator_logits, generator=generators,
                                               mask_temperature=mask_temperature)
            ran = bool(running.any())
            if ran:
                # φ_r re-predicts the tokens of the executing images, then the scheduler draws their new map
                logits = self.refiner(latents[on], lq_tokens[on], visible_mask=kept[on],
                                      trusted_mask=trusted[on]).logits
                latents = scheduler.step(logits, t, latents, generator=generators,
                                         token_temperature=token_temperature).prev_sample
                if callback_on_step_end is not None:
                    available = {"latents": latents, "kept_mask": kept, "condition_tokens": lq_tokens,
                                 "trusted_mask": trusted}
                    callback_kwargs = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                    kept = callback_outputs.pop("kept_mask", kept)
                # φ_e judges the tokens the next step starts from (after the callback, which may replace them);
                # after the last step it would be wasted.
                if i < num_inference_steps - 1:
                    evaluator_logits[on] = self.evaluator(latents[on], lq_tokens[on]).logits.to(evaluator_logits.dtype)
            else:
                # a step that every image skips is no step: no network, no draw, no callback, and the progress
                # bar no longer waits for it
                progress_bar.total -= 1
            if return_intermediates:  # recorded per schedule step; __call__ returns the steps that ran
                step_ran.append(ran)
                step_tokens.append(latents.clone())
                step_masks.append(torch.where(on[:, None, None], kept, trusted).cpu())
            progress_bar.update() if ran else progress_bar.refresh()

        # 3. decode
        crop = (slice(None), slice(None), slice(0, height * self.upscale_factor), slice(0, width * self.upscale_factor))
        images = self.vqvae.decode(latents).sample[crop].float()
        images = apply_color_fix(images, lq, *color_fix)
        if not return_intermediates:
            return _RunResult(images, latents)
        return _RunResult(images, latents, step_tokens, step_masks, step_ran)

    def _run_groups(self, images, generators, groups, tile_for, tiles: tiling.TileSettings, run_kwargs) -> list:
        """Every image's :class:`_RunResult`: tiled images one by one, same-size untiled ones as batches."""
        runs = sum(tiling.num_runs(images[m[0]], tile_for[m[0]], tiles.padding, tiles.batch_size)
                   if key[0] == "tile" else 1 for key, m in groups.items())
        results: list = [None] * len(images)
        with self.progress_bar(total=runs * run_kwargs["num_inference_steps"]) as progress_bar:
            run_kwargs = dict(run_kwargs, progress_bar=progress_bar)
            for key, members in groups.items():
                if key[0] == "tile":
                    n = members[0]
                    sr = self._run_tiled(images[n][None], generators[n], tile_for[n], *tiles, run_kwargs)
                    results[n] = _RunResult(images=sr, tokens=None)
                    continue
                run = self._run(torch.stack([images[n] for n in members]), [generators[n] for n in members],
                                **run_kwargs)
                for j, n in enumerate(members):
                    results[n] = run.select(j)
        return results

    def _tile_shapes(self, images, tile_size, tile_padding, tile_batch_size, return_intermediates, latents,
                     output_type) -> dict:
        """Each image's tile shape (None: untiled), refusing what tiling cannot give."""
        tile_for = {}
        for n, x in enumerate(images):
            if tile_size == "auto":
                tile_for[n] = self.auto_tile_shape(*x.shape[1:], tile_padding, tile_batch_size)
            else:
                tile_for[n] = None if tile_size is None else (tile_size, tile_size)
        tiled = any(v is not None for v in tile_for.values())
        if (return_intermediates or latents is not None) and tiled:
            raise ValueError("return_intermediates and latents are not supported with tiling; pass tile_size=None")
        if output_type == "latent" and tiled:
            raise ValueError('output_type="latent" is not available for tiled inference; pass tile_size=None')
        return tile_for

    def _largest_run(self, images, groups, tile_for, tile_padding: int, tile_batch_size: int) -> int:
        """Padded LQ pixels of the largest single run of a call: a batch of same-size images, or of tiles."""
        largest = 0
        for key, members in groups.items():
            height, width = images[members[0]].shape[1:]
            if key[0] == "tile":
                tile_h, tile_w = tile_for[members[0]]
                run_h, run_w = self.padded_size(min(tile_h + 2 * tile_padding, height),
                                                min(tile_w + 2 * tile_padding, width))
                largest = max(largest, run_h * run_w * tile_batch_size)
            else:
                run_h, run_w = self.padded_size(height, width)
                largest = max(largest, run_h * run_w * len(members))
        return largest

    def _run_tiled(self, lq, generator, tile_shape, tile_padding, tile_blending, tile_batch_size, run_kwargs):
        """Restore one image (1, 3, H, W) tile by tile (the official ``test_tile``; see :func:`.tiling.run_tiled`).
        One tile per run: the tiles share the image's generator, in row order (the official stream). Batched
        tiles: each tile has its own generator, seeded from the image's, so batching never changes a result."""
        count = len(tiling.tiles_of(*lq.shape[2:], tile_shape, tile_padding))
        tile_generators = [generator] * count if tile_batch_size == 1 else spawn_generators(generator, count)

        def restore(tiles: torch.Tensor, which: list[int]) -> torch.Tensor:
            return self._run(tiles, [tile_generators[k] for k in which], **run_kwargs).images.cpu()

        return tiling.run_tiled(lq, restore, self.upscale_factor, tile_shape, tile_padding, tile_blending,
                                tile_batch_size)

    # ------------------------------------------------------------------ entry point
    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
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
        tile_batch_size: int = 1,
        return_intermediates: bool = False,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        color_fix: str | None = None,
        color_fix_levels: int | None = None,
    ):
        r"""Super-resolve ``image`` by the factor s of the loaded weights (x2 or x4).

        The call checks its arguments, plans each image's tiles, then runs the denoising loop of :meth:`_run`
        (E_l, φ_e's verdict, then per step: keep-mask, φ_r, ``scheduler.step``, callback, φ_e) once per batch of
        same-size untiled images or per tile, and decodes.

        Args:
            image: PIL image(s), numpy uint8/uint16/float HW(C) or BHWC, torch float CHW or BCHW in [0, 1], or a
                list of these, of any sizes. Grayscale is replicated to RGB; an alpha channel is dropped.
            num_inference_steps (`int`, *optional*): T, refinement steps (default ``pipe.config.num_inference_steps``).
            mask_threshold (`float`, *optional*): α, φ_e's trust threshold (default: the model's own,
                ``pipe.scheduler.config.mask_threshold``; the official folders' is 0.7).
            token_temperature, mask_temperature (`float`, *optional*): sampling temperatures (default: the
                model's own, in ``pipe.scheduler.config``).
            num_images_per_prompt (`int`, defaults to 1): samples per input image (they differ by the generator).
            generator (`torch.Generator` or a list of them, *optional*): one, or one per output image.
            latents (`torch.Tensor`, *optional*): initial token ids S_l (B, h, w) replacing E_l's (untiled same-size
                batches); (h, w) is the padded input's token grid, B the number of inputs or of outputs.
            tile_size (`int`, `"auto"` or None, defaults to `"auto"`): LQ tile side; None never tiles; ``"auto"``
                tiles only runs whose fp32 activations would exceed ``tiling.AUTO_TILE_BUDGET`` (1 GiB): the plan
                follows the input size and the model, never the machine (see :meth:`auto_tile_shape`). A run that
                will not fit the memory available now is announced with a warning naming the tile_size that fits.
            tile_padding (`int`, defaults to 16): LQ pixels of context around each tile (official 16).
            tile_blending (`bool`, defaults to True): blend overlapping tiles; False pastes centres (official).
            tile_batch_size (`int`, defaults to 1): tiles of one shape run together (the budget is shared).
                1 keeps the official random stream; above 1 each tile draws from its own generator.
            return_intermediates (`bool`, defaults to False): also return the image and keep-mask of every step
                that runs.
            output_type (`str`, defaults to `"pil"`): ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (token ids).
            return_dict (`bool`, defaults to True): return an [`ITERPipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): ``fn(pipe, step, timestep, tensors)`` after every step
                that runs (``step`` is its index in the schedule of T); may return replacements for ``latents``
                (token ids) and ``kept_mask``. Steps that the adaptive start skips for every image of the batch do
                not fire it; the progress bar does not count them either. A tiled image runs its tiles one after
                another: the callback then sees each tile's steps in turn with that tile's token maps (B is the
                tile's own, as φ_e judges each tile alone, so tiles may run different numbers of steps).
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): names from ``_callback_tensor_inputs``.
            color_fix (`str`, *optional*): ``"wavelet"``, ``"adain"`` or ``"none"``; default
                ``pipe.config.color_fix``. Applied to the final and the per-step images, not to token outputs.
            color_fix_levels (`int`, *optional*): wavelet levels (default ``pipe.config.color_fix_levels``).

        Examples:

        Returns:
            [`ITERPipelineOutput`] or `tuple`: with ``return_dict=True`` an [`ITERPipelineOutput`]: ``images``
            (like ``output_type`` asks, a list when the inputs differ in size) and, with
            ``return_intermediates=True``, ``intermediate_images`` and ``intermediate_masks`` (one entry per step that
            ran).
            Otherwise the tuple ``(images, intermediate_images, intermediate_masks)``, None where not asked for.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        num_inference_steps = self.config.num_inference_steps if num_inference_steps is None else num_inference_steps
        self.check_inputs(num_inference_steps, output_type, tile_size, tile_padding, latents, tensor_inputs,
                          num_images_per_prompt=num_images_per_prompt, callback_on_step_end=callback_on_step_end,
                          mask_threshold=mask_threshold, token_temperature=token_temperature,
                          mask_temperature=mask_temperature, tile_batch_size=tile_batch_size)
        color_fix = resolve_color_fix(self.config, color_fix, color_fix_levels)
        inputs = to_image_tensors(image)
        images = [x for x in inputs for _ in range(num_images_per_prompt)]
        generators = per_image_generators(generator, len(images))
        self._interrupt, self._num_timesteps = False, num_inference_steps

        tile_for = self._tile_shapes(images, tile_size, tile_padding, tile_batch_size, return_intermediates, latents,
                                     output_type)
        groups = _group_runs(images, tile_for)
        self.warn_if_memory_short(self._largest_run(images, groups, tile_for, tile_padding, tile_batch_size),
                                  tile_padding, tile_batch_size)
        if latents is not None:
            if len(groups) != 1:
                raise ValueError("latents can only be given for a batch of same-size images")
            latents = self._check_latents(latents, images[0], len(inputs), num_images_per_prompt)
        run_kwargs = dict(num_inference_steps=num_inference_steps, mask_threshold=mask_threshold, latents=latents,
                          token_temperature=token_temperature, mask_temperature=mask_temperature, color_fix=color_fix,
                          return_intermediates=return_intermediates, callback_on_step_end=callback_on_step_end,
                          callback_on_step_end_tensor_inputs=tensor_inputs)
        tiles = tiling.TileSettings(tile_padding, tile_blending, tile_batch_size)
        results = self._run_groups(images, generators, groups, tile_for, tiles, run_kwargs)
        output = self._format(results, output_type, return_intermediates, images, color_fix)
        self.maybe_free_model_hooks()
        return ITERPipelineOutput(*output) if return_dict else output

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
        # the steps that ran for any image (a skipped one shows that image unchanged, with its mask B)
        ran = [step for step in range(len(results[0].step_ran)) if any(r.step_ran[step] for r in results)]
        step_images = []
        for step in ran:
            if output_type == "latent":  # the token map after each step, like ``images``
                step_images.append(collect_tokens([r.step_tokens[step] for r in results]))
                continue
            decoded = []
            for r, x in zip(results, inputs):
                crop = (..., slice(0, x.shape[1] * s), slice(0, x.shape[2] * s))
                step_image = self.vqvae.decode(r.step_tokens[step]).sample[crop].float()
                decoded.append(apply_color_fix(step_image, x[None], *color_fix))
            step_images.append(collect(decoded))
        step_masks = [[r.step_masks[step] for r in results] for step in ran]
        return (images, step_images, step_masks)


def _group_runs(images: list[torch.Tensor], tile_for: dict) -> dict[tuple, list[int]]:
    """Same-size untiled images run together; every rule is per image, so grouping never changes results."""
    groups: dict[tuple, list[int]] = {}
    for n, x in enumerate(images):
        key = ("tile", n) if tile_for[n] is not None else ("batch", tuple(x.shape))
        groups.setdefault(key, []).append(n)
    return groups

