"""ITER's discrete masked-token sampler as a diffusers scheduler.

At step i of T (r = i / T) the schedule keeps ``n_i = int((1 − γ(r)) · w · h)`` tokens and lets φ_r re-predict
the rest. ITER starts adaptively: the tokens that φ_e already trusts (p ≥ α) form the initial keep-mask B, every
step with ``n_i < |B|`` is skipped (the map stays S_l), the first executed step keeps B itself, and every later
step adds ``n_i − |kept|`` positions drawn by ``multinomial`` in proportion to φ_e's "right" probability. The new
tokens of an executed step are drawn from φ_r's categorical distribution at **every** position (kept positions
are re-sampled too, as in the official code; only φ_r's training keeps them stable).

Every rule is applied per image, so a batch gives exactly what its images give one by one; the official code
sums |B| over the batch and takes k from image 0 (see the README's list of departures).

Random draws use ``torch.multinomial`` with the caller's generator(s), one generator per image when a list is
given; with a single generator the images draw from it in batch order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, SchedulerMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import BaseOutput

MASKING_SCHEDULES = ("linear", "cosine", "powX", "expX")
GeneratorArg = torch.Generator | list[torch.Generator] | None


@dataclass
class MaskedTokenSchedulerOutput(BaseOutput):
    """``prev_sample``: the token map after the step (B, h, w) int64; ``pred_original_sample``: φ_r's argmax."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def masking_ratio(r: torch.Tensor, schedule: str) -> torch.Tensor:
    """γ(r): the fraction of tokens still masked at progress r ∈ [0, 1]; every schedule ends at γ(1) = 0.

    ``linear`` 1 − r, ``cosine`` cos(rπ/2) and ``powX`` 1 − r^X start from γ(0) = 1. ``expX``,
    (X − 1)/X · (1 − X^(r − 1)), starts at γ(0) = ((X − 1)/X)², below 1 for X > 1/2 (4/9 for ``exp3``), so its
    first step already keeps tokens. X is a positive number.
    """
    if schedule == "linear":
        return 1 - r
    if schedule == "cosine":
        return torch.cos(r * math.pi / 2)
    if isinstance(schedule, str) and schedule[:3] in ("pow", "exp"):
        try:
            value = float(schedule[3:])
        except ValueError:
            value = float("nan")
        if math.isfinite(value) and value > 0:
            if schedule.startswith("pow"):
                return 1.0 - r**value
            return (value - 1) / value * (1.0 - value ** (r - 1))
    raise ValueError(
        f"unknown masking_schedule {schedule!r}; expected one of {MASKING_SCHEDULES} (X a positive number)"
    )


def _generator_for(generator: GeneratorArg, index: int) -> torch.Generator | None:
    return generator[index] if isinstance(generator, list) else generator


def _check_generators(generator: GeneratorArg, batch: int) -> None:
    if isinstance(generator, list) and len(generator) != batch:
        raise ValueError(f"got {len(generator)} generators for a batch of {batch}; pass one per image or a single one")


def _multinomial(probs: torch.Tensor, num_samples: int, replacement: bool, generator: torch.Generator | None):
    """multinomial drawn on the generator's device (so CPU generators work for GPU tensors), moved back."""
    device = probs.device if generator is None else generator.device
    out = torch.multinomial(probs.to(device), num_samples, replacement=replacement, generator=generator)
    return out.to(probs.device)


class MaskedTokenScheduler(SchedulerMixin, ConfigMixin):
    r"""The sampler of ITER's token refinement (official ``TokenRefine`` in eval mode), one image at a time.

    Parameters:
        masking_schedule (`str`, defaults to `"linear"`): γ, see :func:`masking_ratio` (official inference:
            ``"linear"``; training: cosine).
        mask_threshold (`float`, defaults to 0.7): α; S_l tokens whose φ_e probability of being right is ≥ α form
            the initial keep-mask.
        token_temperature (`float`, defaults to 1.0): temperature of φ_r's categorical token sampling.
        mask_temperature (`float`, defaults to 1.0): temperature of φ_e's softmax when drawing the next kept
            positions.
        adaptive_start (`bool`, defaults to `True`): skip the steps whose schedule keeps fewer tokens than φ_e
            already trusts.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        masking_schedule: str = "linear",
        mask_threshold: float = 0.7,
        token_temperature: float = 1.0,
        mask_temperature: float = 1.0,
        adaptive_start: bool = True,
    ):
        masking_ratio(torch.zeros(1), masking_schedule)  # validates the name early
        self.timesteps = None
        self.num_inference_steps = None

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        """T steps; timesteps count down T−1 … 0 (0 = the last step, after which nothing is masked)."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be ≥ 1, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1, device=device)

    def index_for_timestep(self, timestep: int | torch.Tensor) -> int:
        """i, the position of ``timestep`` in the schedule (0 for the first step, T − 1 for the last)."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps() before sampling")
        return self.num_inference_steps - 1 - int(timestep)

    def num_kept_tokens(self, timestep: int | torch.Tensor, height: int, width: int) -> int:
        """n_i = int((1 − γ(i/T)) · w · h), computed in float32 like the official code so k matches exactly."""
        r = torch.tensor([self.index_for_timestep(timestep) / self.num_inference_steps], dtype=torch.float32)
        kept = (1 - masking_ratio(r, self.config.masking_schedule)) * width * height
        return int(kept)

    def start_steps(self, trusted_mask: torch.Tensor) -> torch.Tensor:
        """Adaptive start: each image's first executed step i, given φ_e's trusted mask B (B, h, w).

        A step is skipped while the schedule would keep fewer tokens than φ_e trusts (n_i < |B|). n_i never
        decreases with i, so the skipped steps are a prefix and one index per image says which steps run; the
        first executed step keeps B itself. Without ``adaptive_start`` every image starts at step 0.
        Returns (B,) int64 on the CPU (one host sync per image batch, none inside the step loop).
        """
        batch, height, width = trusted_mask.shape
        if not self.config.adaptive_start:
            return torch.zeros(batch, dtype=torch.long)
        num_trusted = trusted_mask.flatten(1).sum(1).cpu()
        kept = torch.tensor([self.num_kept_tokens(t, height, width) for t in self.timesteps])
        return (kept[None, :] < num_trusted[:, None]).sum(1)

    def trusted_mask(self, evaluator_logits: torch.Tensor, mask_threshold: float | None = None) -> torch.Tensor:
        """B: 1 where φ_e's probability that the token is right is ≥ α. (B, 2, h, w) logits -> (B, h, w) float."""
        alpha = self.config.mask_threshold if mask_threshold is None else mask_threshold
        return (evaluator_logits.float().softmax(dim=1)[:, 1] >= alpha).float()

    def sample_mask(self, evaluator_logits: torch.Tensor, timestep: int | torch.Tensor, kept_mask: torch.Tensor,
                    generator: GeneratorArg = None, mask_temperature: float | None = None) -> torch.Tensor:
        """Grow each image's keep-mask to n_i tokens, drawing new positions ∝ φ_e's "right" probability.

        ``evaluator_logits`` (B, 2, h, w) are φ_e's scores of the current tokens, ``kept_mask`` (B, h, w) the
        previous keep-mask. At least one new position is drawn, as in the official sampler.
        """
        temperature = self.config.mask_temperature if mask_temperature is None else mask_temperature
        _, height, width = kept_mask.shape
        target = max(1, self.num_kept_tokens(timestep, height, width))
        probs = (evaluator_logits.float() / temperature).softmax(dim=1)[:, 1] * (1 - kept_mask)
        new_mask = kept_mask.clone()
        _check_generators(generator, kept_mask.shape[0])
        for b in range(kept_mask.shape[0]):
            k = max(1, target - int(kept_mask[b].sum().item()))
            picked = _multinomial(probs[b].flatten() + 1e-8, k, False, _generator_for(generator, b))
            # Binary by construction: the official `mask_out + prev_mask` could reach 2 if a kept position
            # were drawn (only when every unkept probability underflows below the 1e-8 floor).
            new_mask[b].view(-1)[picked] = 1.0
        return new_mask

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: GeneratorArg = None,
        token_temperature: float | None = None,
        return_dict: bool = True,
    ) -> MaskedTokenSchedulerOutput | tuple:
        """Draw the new token map from φ_r's logits ``model_output`` (B, K, h, w) at every position.

        The sequence form, (B, K, L) logits with a (B, L) ``sample``, is accepted too.

        ``sample`` (B, h, w) is the current map (only its shape and device are used: ITER re-samples kept
        positions too).
        """
        if model_output.ndim == 3 and sample.ndim == 2:  # sequence form: (B, K, L) logits, (B, L) tokens
            prev, pred = self.step(model_output.unsqueeze(2), timestep, sample.unsqueeze(1), generator,
                                   token_temperature, return_dict=False)
            prev, pred = prev.squeeze(1), pred.squeeze(1)
            return MaskedTokenSchedulerOutput(prev, pred) if return_dict else (prev, pred)
        if model_output.shape[0] != sample.shape[0] or model_output.shape[2:] != sample.shape[1:]:
            raise ValueError(f"model_output {tuple(model_output.shape)} does not match sample {tuple(sample.shape)}")
        temperature = self.config.token_temperature if token_temperature is None else token_temperature
        batch, codes, height, width = model_output.shape
        logits = (model_output.float() / temperature).permute(0, 2, 3, 1).reshape(batch, height * width, codes)
        tokens = torch.empty_like(sample)
        _check_generators(generator, batch)
        for b in range(batch):
            # torch.distributions.Categorical(logits).sample(), with a generator.
            probs = (logits[b] - logits[b].logsumexp(dim=-1, keepdim=True)).softmax(dim=-1)
            drawn = _multinomial(probs, 1, True, _generator_for(generator, b))
            tokens[b] = drawn.view(height, width)
        prev_sample = tokens
        pred_original_sample = model_output.argmax(dim=1)
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return MaskedTokenSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def random_visible_mask(
        self, batch: int, height: int, width: int, generator: torch.Generator | None = None, device=None,
        masking_schedule: str | None = None,
    ) -> torch.Tensor:
        """Training-time masking: per image, hide exactly ``max(1, int(γ(u)·h·w))`` random positions, u ~ U(0, 1).

        γ is ``masking_schedule`` (default: the config's; the official training masks with ``"cosine"``).
        Returns the visible mask (B, h, w) float on ``device``: 1 = visible, 0 = hidden (the official ``sample_k``).
        The draws are made on the generator's device (a CUDA generator works), else on ``device``.
        """
        schedule = self.config.masking_schedule if masking_schedule is None else masking_schedule
        draw_device = generator.device if generator is not None else torch.device(device or "cpu")
        progress = torch.rand(batch, generator=generator, device=draw_device)
        num_hidden = (masking_ratio(progress, schedule) * height * width).int().clamp(min=1)
        scores = torch.rand(batch, height * width, generator=generator, device=draw_device)
        ranks = scores.argsort(dim=1, descending=True).argsort(dim=1)
        hidden = ranks < num_hidden[:, None]
        return (~hidden).float().view(batch, height, width).to(device)

    def __len__(self):
        return self.num_inference_steps or 0
