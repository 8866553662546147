"""iter-diffusers: ITER real-world super-resolution (Chen et al., AAAI 2024) for Hugging Face diffusers.

Import this package before ``ITERPipeline.from_pretrained``: diffusers resolves the component classes recorded in
``model_index.json`` (e.g. ``iter_diffusers.models.vqgan.ITERVQModel``) only among imported modules. The module
paths of the components are part of the saved format; do not move them.

``DEMO_MODEL_PATH`` is the folder of the bundled demo model; ``load_official_pipeline("official-x4")`` downloads,
converts and caches the official weights.
"""

from pathlib import Path

from .models import (
    ITERDistortionRemovalEncoder,
    ITERRefinementTransformer,
    ITERTokenEvaluator,
    ITERTokenTransformer,
    ITERUpsamplingEncoder,
    ITERVQModel,
)
from .official import load_official_pipeline
from .pipelines import ITERPipeline, ITERPipelineOutput
from .schedulers import MaskedTokenScheduler, MaskedTokenSchedulerOutput

__version__ = "0.1.0"

#: The bundled demo model (x4, trained here on a CPU): ``ITERPipeline.from_pretrained(DEMO_MODEL_PATH)``.
DEMO_MODEL_PATH = Path(__file__).parent / "pretrained" / "iter-demo-x4"

__all__ = [
    "DEMO_MODEL_PATH",
    "ITERDistortionRemovalEncoder",
    "ITERPipeline",
    "ITERPipelineOutput",
    "ITERRefinementTransformer",
    "ITERTokenEvaluator",
    "ITERTokenTransformer",
    "ITERUpsamplingEncoder",
    "ITERVQModel",
    "MaskedTokenScheduler",
    "MaskedTokenSchedulerOutput",
    "load_official_pipeline",
]
