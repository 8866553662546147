"""iter-diffusers: ITER real-world super-resolution (Chen et al., AAAI 2024) for Hugging Face diffusers.

``ITERPipeline.from_pretrained(folder)`` loads a pipeline folder with this package's classes. Folders saved now name
the code files they carry (``iter_diffusers_models`` ...; see :mod:`.pipelines.hub_code`); folders saved before name
the package's module paths (e.g. ``iter_diffusers.models.vqgan.ITERVQModel``), so those paths are part of the saved
format too: do not move them.

``DEMO_MODEL_PATH`` is the folder of the bundled demo model; ``load_official_pipeline("official-x4")`` downloads,
converts and caches the official weights.

The public names are imported on first use (PEP 562), so that ``import iter_diffusers`` and the command lines'
``--help`` do not pay for torch and diffusers.
"""

from __future__ import annotations

import importlib
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


def __getattr__(name: str):
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY_NAMES[name], __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))
