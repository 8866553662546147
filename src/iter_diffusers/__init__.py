"""iter-diffusers: ITER real-world super-resolution (Chen et al., AAAI 2024) for Hugging Face diffusers.

``from iter_diffusers import ITERPipeline`` before ``ITERPipeline.from_pretrained``. The module paths of the
components (e.g. ``iter_diffusers.models.vqgan.ITERVQModel``) are recorded in ``model_index.json`` and are part of
the saved format; do not move them.

``DEMO_MODEL_PATH`` is the folder of the bundled demo model; ``load_official_pipeline("official-x4")`` downloads,
converts and caches the official weights.

The public names are imported on first use (PEP 562), so that ``import iter_diffusers`` and the command lines'
``--help`` do not pay for torch and diffusers.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: The bundled demo model (x4, trained here on a CPU): ``ITERPipeline.from_pretrained(DEMO_MODEL_PATH)``.
DEMO_MODEL_PATH = Path(__file__).parent / "pretrained" / "iter-demo-x4"

# public name -> the submodule that defines it
_LAZY_NAMES = {
    "ITERDistortionRemovalEncoder": ".models",
    "ITERRefinementTransformer": ".models",
    "ITERTokenEvaluator": ".models",
    "ITERTokenTransformer": ".models",
    "ITERUpsamplingEncoder": ".models",
    "ITERVQModel": ".models",
    "load_official_pipeline": ".official",
    "ITERPipeline": ".pipelines",
    "ITERPipelineOutput": ".pipelines",
    "MaskedTokenScheduler": ".schedulers",
    "MaskedTokenSchedulerOutput": ".schedulers",
}

__all__ = ["DEMO_MODEL_PATH", *sorted(_LAZY_NAMES)]

if TYPE_CHECKING:  # for type checkers and IDEs, which do not run __getattr__
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


def _not_the_empty_fp32_warning(record: logging.LogRecord) -> bool:
    # diffusers' ModelMixin.to warns "There are modules in X that should be kept in float32: []" at every dtype
    # cast, also when there are none: it tests `(self._keep_in_fp32_modules or []) is not None`, always true, so no
    # class attribute can silence it (seen with diffusers 0.42). Only the empty-list case is dropped.
    return "that should be kept in float32: []." not in record.getMessage()


# The logger of diffusers.models.modeling_utils; registering the filter by name does not import diffusers.
logging.getLogger("diffusers.models.modeling_utils").addFilter(_not_the_empty_fp32_warning)


def __getattr__(name: str):
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))
