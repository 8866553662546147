"""Pipelines of iter_diffusers."""

from .pipeline_iter import ITERPipeline, ITERPipelineOutput

__all__ = ["ITERPipeline", "ITERPipelineOutput"]
