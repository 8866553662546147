"""ITER networks as diffusers models."""

from . import quiet_casts  # noqa: F401  (drops diffusers' empty keep-in-fp32 warning at every cast)

from .discriminator import UNetDiscriminatorSN
from .lq_encoder import ITERDistortionRemovalEncoder
from .outputs import ITERLatentLogitsOutput, ITERLogitsOutput
from .upsampling_encoder import ITERUpsamplingEncoder
from .token_networks import ITERRefinementTransformer, ITERTokenEvaluator, ITERTokenTransformer
from .vqgan import ITERVQModel, VectorQuantizer

__all__ = [
    "ITERDistortionRemovalEncoder",
    "ITERLatentLogitsOutput",
    "ITERLogitsOutput",
    "ITERRefinementTransformer",
    "ITERTokenEvaluator",
    "ITERTokenTransformer",
    "ITERUpsamplingEncoder",
    "ITERVQModel",
    "UNetDiscriminatorSN",
    "VectorQuantizer",
]
