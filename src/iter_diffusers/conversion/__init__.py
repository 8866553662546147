"""Conversion of the official ITER release checkpoints into an :class:`ITERPipeline`.

The official files are ``{'params': state_dict}`` (or ``'params_ema'``) pickles:

* ``ITER_swinvqgan.pth``: the Swin-VQGAN, ``encoder.*``, ``decoder.*``, ``quantize.embedding.weight`` and the
  ``generator.*`` alias of the decoder (``VQModel.generator = self.decoder``);
* ``ITER_x4.pth`` / ``ITER_x2.pth``: ``lq_encoder.model.*`` (E_l), ``token_refine_net.token_crit_net.*`` (φ_e),
  ``token_refine_net.token_refine_net.*`` (φ_r), and possibly a copy of the VQGAN under ``vqgan.*`` (the
  official ``save_network(except_key=...)`` does not drop it).

:mod:`.state_dicts` reads them, :mod:`.networks` maps each network's tensors onto ours, :mod:`.pipeline` puts the
pipeline together and :mod:`.saving` writes it (and uploads it). Any problem raises :class:`ConversionError` with
a one-line message.
"""

from .networks import convert_lq_encoder, convert_token_network, convert_vqgan, infer_vqgan_config
from .pipeline import (
    ITER_RELEASE_FILES,
    OFFICIAL_RELEASE_URL,
    VQGAN_RELEASE_FILE,
    convert_official_checkpoints,
    split_iter_checkpoint,
)
from .saving import check_replaceable, convert_and_save, pipeline_files, push_folder_to_hub, sha256_file
from .state_dicts import ConversionError, load_official_checkpoint

__all__ = [
    "ConversionError",
    "ITER_RELEASE_FILES",
    "OFFICIAL_RELEASE_URL",
    "VQGAN_RELEASE_FILE",
    "check_replaceable",
    "convert_and_save",
    "convert_lq_encoder",
    "convert_official_checkpoints",
    "convert_token_network",
    "convert_vqgan",
    "infer_vqgan_config",
    "load_official_checkpoint",
    "pipeline_files",
    "push_folder_to_hub",
    "sha256_file",
    "split_iter_checkpoint",
]
