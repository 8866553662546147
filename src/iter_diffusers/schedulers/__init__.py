"""Schedulers of iter_diffusers."""

from .scheduling_masked_token import MaskedTokenScheduler, MaskedTokenSchedulerOutput, masking_ratio

__all__ = ["MaskedTokenScheduler", "MaskedTokenSchedulerOutput", "masking_ratio"]
