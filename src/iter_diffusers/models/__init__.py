"""ITER networks as diffusers models."""

from .discriminator import UNetDiscriminatorSN
from .lq_encoder import ITERDistortionRemovalEncoder
from .outputs import ITERLogitsOutput
from .token_networks import ITERRefinementTransformer, ITERTokenEvaluator, ITERTokenTransformer
from .vqgan import ITERVQModel, VectorQuantizer

__all__ = [
    "ITERDistortionRemovalEncoder",
    "ITERLogitsOutput",
    "ITERRefinementTransformer",
    "ITERTokenEvaluator",
    "ITERTokenTransformer",
    "ITERVQModel",
    "UNetDiscriminatorSN",
    "VectorQuantizer",
]
