"""Pipelines of iter_diffusers. ``ITERPipeline`` is imported on first use (PEP 562), so that importing a light
submodule (``pipelines.checks``, for the command line) does not load diffusers and torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["ITERPipeline", "ITERPipelineOutput"]

if TYPE_CHECKING:
    from .pipeline_iter import ITERPipeline, ITERPipelineOutput


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(".pipeline_iter", __name__), name)
