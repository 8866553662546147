"""The VQGAN decoder in int8 on OpenVINO: the fast, lossy mode (``iter-sr --dtype int8``; ``--dtype auto`` on CPUs
without native bf16 when NNCF is installed).

NNCF's post-training quantisation gives the decoder int8 weights and int8 activations, their ranges calibrated on
the latents it renders when the pipeline upscales two small photos shipped with the package
(``data/calibration_*.png``). Only the decoder: on an AVX2 CPU it runs about twice as fast in int8, while φ_e and
φ_r ran slower in int8 than in OpenVINO fp32 and moved 8–20 % of their argmax tokens, and E_l is a small part of the
time (docs/benchmarks.md). So E_l, φ_e and φ_r stay fp32 on OpenVINO and **the tokens are those of the exact
mode**; only their rendering is approximate.

The int8 decoder is saved as OpenVINO IR in the same cache as the fp32 networks, under a key that hashes all four
fp32 networks (the latents it is calibrated on come from the others), the NNCF version and the calibration recipe;
the first call with a new model calibrates and quantises (seconds for the bundled model, about two minutes for the
paper-size one), later processes read the IR.

How faithful int8 is depends on the weights, so it is measured, not assumed: beside the IR is the PSNR of the int8
decoder's images against the fp32 decoder's on the calibration latents (the bundled model: 44.5 dB; the tiny test
checkpoints, random weights: 29.6 dB). ``--dtype auto`` keeps the int8 decoder only at ``AUTO_MIN_PSNR`` dB or more
and otherwise stays exact (fp32 on OpenVINO), saying so; an explicit ``--dtype int8`` uses it whatever it measured.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["int8_available", "quantize_decoder", "CALIBRATION_IMAGES"]

#: The calibration run: the photos (in ``iter_diffusers/data``), the call (the model's own defaults) and the seed.
CALIBRATION_IMAGES = ("calibration_chelsea_lq.png", "calibration_astronaut_lq.png")
CALIBRATION_CALL = {"tile_size": None, "output_type": "pt"}
CALIBRATION_SEED = 0
#: Bump when anything above or in :func:`_quantize` changes, so that cached int8 decoders are remade.
RECIPE_VERSION = 2
#: The least PSNR (dB) of the int8 decoder against fp32, on the calibration latents, at which ``--dtype auto`` uses it.
AUTO_MIN_PSNR = 35.0


def int8_available() -> bool:
    """Whether OpenVINO and NNCF are installed (found, not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def calibration_images() -> list[torch.Tensor]:
    """The shipped calibration photos as (1, 3, H, W) float tensors in [0, 1]."""
    images = []
    for name in CALIBRATION_IMAGES:
        with resources.files("iter_diffusers.data").joinpath(name).open("rb") as file:
            array = np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(array).permute(2, 0, 1)[None].contiguous())
    return images


def _int8_key(fp32_irs: dict[str, Path]) -> str:
    # NNCF's version from its metadata: importing NNCF takes seconds, and a cached int8 decoder never needs it
    digest = hashlib.sha256(f"int8|nncf {metadata.version('nncf')}|recipe {RECIPE_VERSION}|{CALIBRATION_CALL}".encode())
    for name in sorted(fp32_irs):
        digest.update(f"{name}={fp32_irs[name].parent.name}".encode())  # the fp32 IR's folder is its key
    for name in CALIBRATION_IMAGES:
        digest.update(resources.files("iter_diffusers.data").joinpath(name).read_bytes())
    return digest.hexdigest()[:32]


def record_calibration_latents(pipe, decoder) -> list[list[np.ndarray]]:
    """Upscale the calibration photos and keep every input that ``decoder`` (a ``_CompiledNetwork``) was given."""
    decoder.recorded = []
    try:
        generator = torch.Generator().manual_seed(CALIBRATION_SEED)
        with torch.no_grad():
            for image in calibration_images():
                pipe(image, generator=generator, **CALIBRATION_CALL)
        return decoder.recorded
    finally:
        decoder.recorded = None


def _quantize(fp32_ir: Path, inputs: list[list[np.ndarray]]):
    import nncf
    import openvino

    model = openvino.Core().read_model(str(fp32_ir))
    return nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs))


def decoder_psnr(fp32_decoder, int8_model, inputs: list[list[np.ndarray]]) -> float:
    """PSNR (dB) of the int8 decoder's images against the fp32 decoder's on ``inputs``, images in [0, 1]."""
    import openvino

    int8_decoder = openvino.Core().compile_model(int8_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    errors = []
    for arrays in inputs:
        exact = fp32_decoder(*(torch.from_numpy(array) for array in arrays)).numpy()
        errors.append(((np.clip(exact, -1, 1) - np.clip(int8_decoder(arrays)[0], -1, 1)) / 2) ** 2)
    return float(-10 * np.log10(max(np.mean([error.mean() for error in errors]), 1e-20)))


def quantize_decoder(pipe, notify: Callable[[str], None] | None = None, min_psnr: float | None = None) -> bool:
    """Run the decoder of ``pipe`` (all four networks already on OpenVINO fp32, by ``use_openvino``) from its int8
    IR, calibrating, quantising and measuring it first if it is not cached (announced to ``notify``). With
    ``min_psnr``, an int8 decoder that measured less is not used (``notify`` is told when it is measured). Returns
    whether it is used."""
    from .openvino_engine import OPENVINO_NETWORKS, cache_dir, network_module, save_ir

    networks = {name: network_module(pipe, name).openvino_network for name in OPENVINO_NETWORKS}
    path = cache_dir() / f"int8-{_int8_key({name: n.path for name, n in networks.items()})}" / "decoder.xml"
    fidelity = path.with_name("fidelity.json")
    measured_now = not path.is_file()
    if measured_now:
        if notify is not None:
            notify(f"calibrating the int8 decoder on {len(CALIBRATION_IMAGES)} shipped photos, once for these weights")
        inputs = record_calibration_latents(pipe, networks["decoder"])
        # The calibration runs are untiled: φ_e and φ_r keep buffers for their shapes (2.2 GB for the paper-size
        # model) that NNCF's own few GB would come on top of. User images bring their own shapes anyway.
        for network in networks.values():
            network.forget_shapes()
        model = _quantize(networks["decoder"].path, inputs)
        psnr = decoder_psnr(networks["decoder"], model, inputs)
        networks["decoder"].forget_shapes()
        save_ir(model, path, extra_files={fidelity.name: json.dumps({"psnr_db": psnr})})
    psnr = json.loads(fidelity.read_text())["psnr_db"]
    if min_psnr is not None and psnr < min_psnr:
        if notify is not None and measured_now:  # later loads state it in their mode's reason
            notify(f"the int8 decoder measured {psnr:.1f} dB against fp32 on the calibration photos (under "
                   f"{min_psnr:g}): the decoder stays fp32, exact")
        return False
    networks["decoder"].use_ir(path)
    return True
