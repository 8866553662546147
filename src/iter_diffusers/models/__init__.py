"""ITER networks as diffusers models."""

from .lq_encoder import ITERDistortionRemovalEncoder, ITEREncoderOutput
from .token_networks import ITERRefinementTransformer, ITERTokenEvaluator, ITERTokenTransformer, TokenNetworkOutput
from .vqgan import ITERVQModel, VectorQuantizer

__all__ = [
    "ITERDistortionRemovalEncoder",
    "ITEREncoderOutput",
    "ITERRefinementTransformer",
    "ITERTokenEvaluator",
    "ITERTokenTransformer",
    "ITERVQModel",
    "TokenNetworkOutput",
    "VectorQuantizer",
]
