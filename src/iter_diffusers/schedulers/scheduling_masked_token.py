"""ITER's discrete masked-token sampler as a diffusers scheduler.

At step i of T (r = i / T) the schedule keeps ``n_i = int((1 − γ(r)) · w · h)`` tokens and lets φ_r re-predict
the rest. ITER starts adaptively: the tokens that φ_e already trusts (p ≥ α) form the initial keep-mask B, every
step with ``n_i < |B|`` is skipped (the map stays S_l), the first executed step keeps B itself, and every later
step adds ``n_i − |kept|`` positions drawn by ``multinomial`` in proportion to φ_e's "right" probability. The new
tokens of an executed step are drawn from φ_r's categorical distribution at **every** position (kept positions
are re-sampled too, as in the official code; only φ_r's training keeps them stable).

A run, the way a diffusers pipeline drives it (each step t needs φ_r and, for the next step's mask, φ_e)::

    scheduler.set_timesteps(T, device)                    # a new run: T−1 … 0
    trusted = scheduler.trusted_mask(phi_e(S_l, S_l))     # B
    scheduler.set_trusted_mask(trusted)                   # the adaptive start: the steps each image skips
    tokens, kept = S_l, trusted
    for t in scheduler.timesteps:
        kept = scheduler.prepare_keep_mask(kept, t, evaluator_logits, generator)  # the mask of step t
        logits = phi_r(tokens, S_l, visible_mask=kept, trusted_mask=trusted)      # (or the executing images only)
        tokens = scheduler.step(logits, t, tokens, generator).prev_sample          # the transition of step t
        evaluator_logits = phi_e(tokens, S_l)                                       # judges them for step t − 1

At a step an image skips, ``prepare_keep_mask`` and ``step`` leave it unchanged and draw nothing; at its first
executed step the mask is B and the tokens are drawn; later steps draw the grown mask, then the tokens. That is
the official order of the random draws. ``add_noise`` is the training-time masking.

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
        self._start_steps = None
        self._step_index = None

    @property
    def step_index(self) -> int | None:
        """The index of the step after the last :meth:`step` (None before the first one of a run)."""
        return self._step_index

    @property
    def start_indices(self) -> torch.Tensor | None:
        """Each image's first executed step i (B,) int64 on the CPU, from :meth:`set_trusted_mask`; None: every
        image runs every step."""
        return self._start_steps

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None):
        """T steps; timesteps count down T−1 … 0 (0 = the last step, after which nothing is masked).

        Starts a new run: forgets the trusted mask of :meth:`set_trusted_mask` and the step index.
        """
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be ≥ 1, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps - 1, -1, -1, device=device)
        self._start_steps = None
        self._step_index = None

    def index_for_timestep(self, timestep: int | torch.Tensor) -> int:
        """i, the position of ``timestep`` in the schedule (0 for the first step, T − 1 for the last)."""
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps() before sampling")
        index = self.num_inference_steps - 1 - int(timestep)
        if not 0 <= index < self.num_inference_steps:
            raise ValueError(f"timestep {int(timestep)} is not one of the {self.num_inference_steps} set timesteps")
        return index

    def num_kept_tokens(self, timestep: int | torch.Tensor, height: int, width: int) -> int:
        """n_i = int((1 − γ(i/T)) · w · h), computed in float32 like the official code so k matches exactly."""
        r = torch.tensor([self.index_for_timestep(timestep) / self.num_inference_steps], dtype=torch.float32)
        kept = (1 - masking_ratio(r, self.config.masking_schedule)) * width * height
        return int(kept)

    # ------------------------------------------------------------------ the adaptive start
    def trusted_mask(self, evaluator_logits: torch.Tensor, mask_threshold: float | None = None) -> torch.Tensor:
        """B: 1 where φ_e's probability that the token is right is ≥ α. (B, 2, h, w) logits -> (B, h, w) float."""
        alpha = self.config.mask_threshold if mask_threshold is None else mask_threshold
        return (evaluator_logits.float().softmax(dim=1)[:, 1] >= alpha).float()

    def start_steps(self, trusted_mask: torch.Tensor) -> torch.Tensor:
        """Adaptive start: each image's first executed step i, given φ_e's trusted mask B (B, h, w).

        A step is skipped while the schedule would keep fewer tokens than φ_e trusts (n_i < |B|). n_i never
        decreases with i, so the skipped steps are a prefix and one index per image says which steps run; the
        first executed step keeps B itself. Without ``adaptive_start`` every image starts at step 0.
        Returns (B,) int64 on the CPU (one host sync per image batch, none inside the step loop). Pure: the
        run's state is set by :meth:`set_trusted_mask`.
        """
        batch, height, width = trusted_mask.shape
        if not self.config.adaptive_start:
            return torch.zeros(batch, dtype=torch.long)
        if self.timesteps is None:
            raise RuntimeError("call set_timesteps() before sampling")
        num_trusted = trusted_mask.flatten(1).sum(1).cpu()
        kept = torch.tensor([self.num_kept_tokens(t, height, width) for t in self.timesteps])
        return (kept[None, :] < num_trusted[:, None]).sum(1)

    def set_trusted_mask(self, trusted_mask: torch.Tensor) -> torch.Tensor:
        """Start a run (after :meth:`set_timesteps`) from φ_e's trusted mask B (B, h, w): the steps each image skips.

        From now on :meth:`executing`, :meth:`prepare_keep_mask` and :meth:`step` follow each image's adaptive
        start (:meth:`start_steps`, returned): a skipped step leaves the image as it is and draws nothing.
        Without this call every image runs every step.
        """
        self._start_steps = self.start_steps(trusted_mask)
        return self._start_steps

    def _starts(self, batch: int) -> torch.Tensor:
        if self._start_steps is None:
            return torch.zeros(batch, dtype=torch.long)
        if len(self._start_steps) != batch:
            raise ValueError(f"got a batch of {batch} but set_trusted_mask() was given {len(self._start_steps)} images")
        return self._start_steps

    def executing(self, timestep: int | torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """(B,) bool on the CPU: the images whose step ``timestep`` runs (the others skip it: adaptive start).

        ``batch_size`` is needed only when :meth:`set_trusted_mask` was not called (then every image runs).
        """
        if self._start_steps is None and batch_size is None:
            raise ValueError("pass batch_size, or call set_trusted_mask() first")
        batch = len(self._start_steps) if batch_size is None else batch_size
        return self._starts(batch) <= self.index_for_timestep(timestep)

    # ------------------------------------------------------------------ before the model: the keep-mask
    def sample_mask(self, evaluator_logits: torch.Tensor, timestep: int | torch.Tensor, kept_mask: torch.Tensor,
                    generator: GeneratorArg = None, mask_temperature: float | None = None) -> torch.Tensor:
        """Grow each image's keep-mask to n_i tokens, drawing new positions ∝ φ_e's "right" probability.

        ``evaluator_logits`` (B, 2, h, w) are φ_e's scores of the current tokens, ``kept_mask`` (B, h, w) the
        previous keep-mask. At least one new position is drawn, as in the official sampler. Every image grows,
        whatever its adaptive start: :meth:`prepare_keep_mask` is the step-aware form the pipeline uses.
        """
        _, height, width = kept_mask.shape
        _check_generators(generator, kept_mask.shape[0])
        new_mask = kept_mask.clone()
        for b in range(kept_mask.shape[0]):
            new_mask[b] = self._grow(evaluator_logits[b : b + 1], timestep, kept_mask[b : b + 1],
                                     _generator_for(generator, b), mask_temperature)[0]
        return new_mask

    def _grow(self, evaluator_logits, timestep, kept_mask, generator, mask_temperature):
        """One image (1, 2, h, w) / (1, h, w): the official ``sample_t``."""
        temperature = self.config.mask_temperature if mask_temperature is None else mask_temperature
        _, height, width = kept_mask.shape
        target = max(1, self.num_kept_tokens(timestep, height, width))
        probs = (evaluator_logits.float() / temperature).softmax(dim=1)[:, 1] * (1 - kept_mask)
        k = max(1, target - int(kept_mask.sum().item()))
        picked = _multinomial(probs.flatten() + 1e-8, k, False, generator)
        # Binary by construction: the official `mask_out + prev_mask` could reach 2 if a kept position
        # were drawn (only when every unkept probability underflows below the 1e-8 floor).
        new_mask = kept_mask.clone()
        new_mask.view(-1)[picked] = 1.0
        return new_mask

    def prepare_keep_mask(
        self,
        kept_mask: torch.Tensor,
        timestep: int | torch.Tensor,
        evaluator_logits: torch.Tensor | None = None,
        generator: GeneratorArg = None,
        mask_temperature: float | None = None,
    ) -> torch.Tensor:
        """The keep-mask φ_r sees at step ``timestep`` (B, h, w): 1 = kept, 0 = re-predicted. Call it before φ_r.

        Per image, by its adaptive start (:meth:`set_trusted_mask`): a skipped step and the first executed step
        return ``kept_mask`` as it is (B, the mask the run started from) and draw nothing; every later step
        grows it to n_i positions, the new ones drawn ∝ φ_e's "right" probability of the current tokens
        (``evaluator_logits`` (B, 2, h, w), needed when some image grows; see :meth:`sample_mask`).
        ``generator``: one per image of the batch, or a single one that the growing images use in batch order.
        """
        batch = kept_mask.shape[0]
        _check_generators(generator, batch)
        growing = self._starts(batch) < self.index_for_timestep(timestep)
        new_mask = kept_mask.clone()
        if growing.any() and evaluator_logits is None:
            raise ValueError(f"step {int(timestep)} grows the keep-mask: pass evaluator_logits (φ_e's scores)")
        for b in growing.nonzero().flatten().tolist():
            new_mask[b] = self._grow(evaluator_logits[b : b + 1], timestep, kept_mask[b : b + 1],
                                     _generator_for(generator, b), mask_temperature)[0]
        return new_mask

    # ------------------------------------------------------------------ after the model: the transition
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: GeneratorArg = None,
        token_temperature: float | None = None,
        return_dict: bool = True,
    ) -> MaskedTokenSchedulerOutput | tuple:
        """Perform step ``timestep`` on the token map ``sample`` (B, h, w) from φ_r's logits ``model_output``.

        Per image, by its adaptive start (:meth:`set_trusted_mask`): an image that skips this step passes
        through unchanged and draws nothing; an executing image gets a new map drawn from φ_r's categorical
        distribution at **every** position (kept ones too, as in the official code).

        ``model_output`` (B', K, h, w) holds φ_r's logits for the whole batch (B' = B; skipped images' rows are
        ignored) or for the executing images only, in batch order (B' = the number of :meth:`executing` images).
        The sequence form, (B', K, L) logits with a (B, L) ``sample``, is accepted too. ``generator``: one per
        image of the batch, or a single one that the executing images use in batch order.

        Returns ``prev_sample`` (the map after the step) and ``pred_original_sample`` (φ_r's argmax where the
        step runs, ``sample`` elsewhere).
        """
        if model_output.ndim == 3 and sample.ndim == 2:  # sequence form: (B', K, L) logits, (B, L) tokens
            prev, pred = self.step(model_output.unsqueeze(2), timestep, sample.unsqueeze(1), generator,
                                   token_temperature, return_dict=False)
            prev, pred = prev.squeeze(1), pred.squeeze(1)
            return MaskedTokenSchedulerOutput(prev, pred) if return_dict else (prev, pred)
        batch = sample.shape[0]
        running = self.executing(timestep, batch)
        rows = running.nonzero().flatten().tolist()
        if model_output.ndim != 4 or model_output.shape[0] not in (batch, len(rows)) \
                or model_output.shape[2:] != sample.shape[1:]:
            raise ValueError(f"model_output {tuple(model_output.shape)} does not match sample {tuple(sample.shape)} "
                             f"({len(rows)} of its {batch} images execute step {int(timestep)})")
        _check_generators(generator, batch)
        temperature = self.config.token_temperature if token_temperature is None else token_temperature
        whole_batch = model_output.shape[0] == batch
        prev_sample, pred_original_sample = sample.clone(), sample.clone()
        for j, b in enumerate(rows):
            logits = model_output[b if whole_batch else j]
            prev_sample[b] = self._draw_tokens(logits, temperature, _generator_for(generator, b))
            pred_original_sample[b] = logits.argmax(dim=0)
        self._step_index = self.index_for_timestep(timestep) + 1
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return MaskedTokenSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    @staticmethod
    def _draw_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
        """One image's (K, h, w) logits -> (h, w) tokens: torch.distributions.Categorical(logits).sample()."""
        codes, height, width = logits.shape
        logits = (logits.float() / temperature).permute(1, 2, 0).reshape(height * width, codes)
        probs = (logits - logits.logsumexp(dim=-1, keepdim=True)).softmax(dim=-1)
        return _multinomial(probs, 1, True, generator).view(height, width)

    # ------------------------------------------------------------------ training
    def add_noise(
        self,
        original_samples: torch.Tensor,
        timesteps: int | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        mask_token_id: int | None = None,
        masking_schedule: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time masking of the token maps ``original_samples`` (B, h, w): per image, hide exactly
        ``max(1, int(γ(r)·h·w))`` random positions (the official ``sample_k``).

        r ~ U(0, 1) per image, or, with ``timesteps`` (one, or (B,), from :attr:`timesteps`; needs
        :meth:`set_timesteps`), the schedule's progress i/T of that step. γ is ``masking_schedule`` (default:
        the config's; the official training masks with ``"cosine"``).

        Returns ``(noisy_samples, visible_mask)``: the ids with every hidden position set to ``mask_token_id``
        (φ_r's is ``refiner.mask_token_id``; None leaves the ids as they are: φ_r takes the original ids and the
        mask), and the visible mask (B, h, w) float, 1 = visible, 0 = hidden (φ_r's ``visible_mask``).
        The draws (r, unless given, then the positions) are made on the generator's device (a CUDA generator
        works), else on the samples'.
        """
        schedule = self.config.masking_schedule if masking_schedule is None else masking_schedule
        batch, height, width = original_samples.shape
        device = original_samples.device
        draw_device = generator.device if generator is not None else device
        if timesteps is None:
            progress = torch.rand(batch, generator=generator, device=draw_device)
        else:
            steps = torch.as_tensor(timesteps).reshape(-1)
            if len(steps) not in (1, batch):
                raise ValueError(f"got {len(steps)} timesteps for a batch of {batch}; pass one or one per image")
            steps = steps.expand(batch).tolist()
            progress = torch.tensor([self.index_for_timestep(t) / self.num_inference_steps for t in steps],
                                    dtype=torch.float32, device=draw_device)
        num_hidden = (masking_ratio(progress, schedule) * height * width).int().clamp(min=1)
        scores = torch.rand(batch, height * width, generator=generator, device=draw_device)
        ranks = scores.argsort(dim=1, descending=True).argsort(dim=1)
        hidden = (ranks < num_hidden[:, None]).view(batch, height, width).to(device)
        noisy_samples = original_samples.clone()
        if mask_token_id is not None:
            noisy_samples[hidden] = mask_token_id
        return noisy_samples, (~hidden).float()

    def __len__(self):
        return self.num_inference_steps or 0
