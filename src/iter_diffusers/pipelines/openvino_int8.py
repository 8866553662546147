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

How faithful int8 is depends on the weights and on the CPU's int8 kernels, so it is measured where it runs, not
assumed: beside the IR is the PSNR of the pipeline's pictures of the calibration photos with the int8 decoder against
those with the fp32 one (the pipeline's whole output, colour fix included, as issue 20's bar measures it).
``--dtype auto`` keeps the int8 decoder only at ``AUTO_MIN_PSNR`` dB or more and otherwise stays exact (fp32 on
OpenVINO), saying so; an explicit ``--dtype int8`` uses it whatever it measured. Measured figures:
docs/benchmarks.md.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tempfile
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
#: The least PSNR (dB) of the pictures of the calibration photos with the int8 decoder against those with the fp32
#: one at which ``--dtype auto`` uses it (issue 20's bar).
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


def upscale_calibration_photos(pipe) -> list[torch.Tensor]:
    """The pipeline's pictures of the calibration photos, (1, 3, H, W) in [0, 1], by the calibration call."""
    generator = torch.Generator().manual_seed(CALIBRATION_SEED)
    with torch.no_grad():
        return [pipe(image, generator=generator, **CALIBRATION_CALL).images for image in calibration_images()]


def record_calibration_latents(pipe, decoder) -> tuple[list[list[np.ndarray]], list[torch.Tensor]]:
    """Upscale the calibration photos; return every input that ``decoder`` (a ``_CompiledNetwork``) was given, and
    the pictures."""
    decoder.recorded = []
    try:
        pictures = upscale_calibration_photos(pipe)
        return decoder.recorded, pictures
    finally:
        decoder.recorded = None


def _pooled_psnr(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """PSNR (dB) between two lists of pictures in [0, 1], their squared errors pooled."""
    mse = torch.stack([((x - y) ** 2).mean() for x, y in zip(a, b)]).mean().item()
    return float(-10 * np.log10(max(mse, 1e-20)))


def _quantize(fp32_ir: Path, inputs: list[list[np.ndarray]]):
    import nncf
    import openvino

    model = openvino.Core().read_model(str(fp32_ir))
    return nncf.quantize(model, nncf.Dataset(inputs), subset_size=len(inputs))


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
        import openvino

        if notify is not None:
            notify(f"calibrating the int8 decoder on {len(CALIBRATION_IMAGES)} shipped photos, once for these weights")
        inputs, exact = record_calibration_latents(pipe, networks["decoder"])
        # The calibration runs are untiled: φ_e and φ_r keep buffers for their shapes (2.2 GB for the paper-size
        # model) that NNCF's own few GB would come on top of. User images bring their own shapes anyway.
        for network in networks.values():
            network.forget_shapes()
        fp32_ir = networks["decoder"].path
        with tempfile.TemporaryDirectory() as staging:  # the pictures the int8 decoder gives, for its PSNR
            candidate = Path(staging) / path.name
            quantized = _quantize(fp32_ir, inputs)
            openvino.save_model(quantized, str(candidate), compress_to_fp16=False)
            networks["decoder"].use_ir(candidate)
            measured = _pooled_psnr(upscale_calibration_photos(pipe), exact)
            for network in networks.values():
                network.forget_shapes()
            save_ir(quantized, path, extra_files={fidelity.name: json.dumps({"psnr_db": measured})})
        networks["decoder"].use_ir(fp32_ir)
    measured = json.loads(fidelity.read_text())["psnr_db"]
    if min_psnr is not None and measured < min_psnr:
        if notify is not None and measured_now:  # later loads state it in their mode's reason
            notify(f"the int8 decoder's pictures of the calibration photos measured {measured:.1f} dB against "
                   f"fp32 (under {min_psnr:g}): the decoder stays fp32, exact")
        return False
    networks["decoder"].use_ir(path)
    return True
