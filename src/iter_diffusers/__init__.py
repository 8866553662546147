"""iter-diffusers: ITER real-world super-resolution (Chen et al., AAAI 2024) for Hugging Face diffusers.

Import this package before ``ITERPipeline.from_pretrained``: diffusers resolves the component classes recorded in
``model_index.json`` (e.g. ``iter_diffusers.models.vqgan.ITERVQModel``) only among imported modules. The module
paths of the components are part of the saved format; do not move them.
"""

from .models import (
    ITERDistortionRemovalEncoder,
    ITERRefinementTransformer,
    ITERTokenEvaluator,
    ITERTokenTransformer,
    ITERVQModel,
)
from .pipelines import ITERPipeline, ITERPipelineOutput
from .schedulers import MaskedTokenScheduler, MaskedTokenSchedulerOutput

__version__ = "0.1.0"

__all__ = [
    "ITERDistortionRemovalEncoder",
    "ITERPipeline",
    "ITERPipelineOutput",
    "ITERRefinementTransformer",
    "ITERTokenEvaluator",
    "ITERTokenTransformer",
    "ITERVQModel",
    "MaskedTokenScheduler",
    "MaskedTokenSchedulerOutput",
]
