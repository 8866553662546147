"""Run a pipeline's networks through OpenVINO in fp32: the exact accelerated mode (``iter-sr --engine openvino``).

OpenVINO (``pip install iter-diffusers[openvino]``) compiles E_l, φ_e, φ_r and the VQGAN decoder into its own CPU
kernels; with ``INFERENCE_PRECISION_HINT=f32`` and no fp16 compression the outputs stay within float rounding of
torch fp32 (the tests bound them by 1e-4, and the tokens are identical). Everything else (the VQ code search, the
scheduler's draws, the colour fix) stays in torch, so the random stream is the same as torch's.

Each network is converted once per set of weights and OpenVINO version, with dynamic batch and spatial sizes (any
image size, no reconversion), and saved as OpenVINO IR under ``<HF assets cache>/iter-diffusers/openvino/<key>``;
the key hashes the weights, the config and the OpenVINO version. Calls run the IR compiled for their exact input
shapes (well under a second per new shape; static shapes let OpenVINO reuse its buffers), and OpenVINO's own
compiled-blob cache sits beside the IR.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from huggingface_hub import constants
from torch import nn

from ..models.outputs import ITERLatentLogitsOutput, ITERLogitsOutput

__all__ = ["openvino_available", "use_openvino", "cache_dir", "OPENVINO_NETWORKS"]

#: The networks :func:`use_openvino` moves, by pipeline component (the VQGAN's decoder only).
OPENVINO_NETWORKS = ("encoder", "evaluator", "refiner", "decoder")


def openvino_available() -> bool:
    """Whether OpenVINO is installed (found, not imported: importing it takes a while)."""
    return importlib.util.find_spec("openvino") is not None


def cache_dir() -> Path:
    return Path(constants.HF_ASSETS_CACHE) / "iter-diffusers" / "openvino"


class _EncoderLogits(nn.Module):
    """E_l as one tensor in, its logits out (what the pipeline reads)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, sample):
        return self.encoder(sample).logits


class _TokenLogits(nn.Module):
    """φ_e or φ_r with positional inputs: tokens, S_l and, for φ_r, the two masks."""

    def __init__(self, network, masks: bool):
        super().__init__()
        self.network, self.masks = network, masks

    def forward(self, tokens, condition_tokens, visible_mask=None, trusted_mask=None):
        if self.masks:
            return self.network(tokens, condition_tokens, visible_mask=visible_mask, trusted_mask=trusted_mask).logits
        return self.network(tokens, condition_tokens).logits


def _example_inputs(pipe, name: str) -> tuple[torch.Tensor, ...]:
    """Small inputs of the right kinds (the converted model takes any batch and size)."""
    side = pipe.token_window * 2  # token grid of the example
    tokens = torch.zeros(1, side, side, dtype=torch.long)
    if name == "encoder":
        return (torch.rand(1, 3, side * pipe.encoder.pixels_per_token, side * pipe.encoder.pixels_per_token),)
    if name == "evaluator":
        return tokens, tokens
    if name == "refiner":
        mask = torch.ones(1, side, side)
        return tokens, tokens, mask, mask
    return (torch.rand(1, pipe.vqvae.config.latent_channels, side, side),)


def network_module(pipe, name: str) -> nn.Module:
    """The torch module of one of :data:`OPENVINO_NETWORKS` (the decoder is the VQGAN's)."""
    return pipe.vqvae.decoder if name == "decoder" else getattr(pipe, name)


def _traceable(pipe, name: str) -> nn.Module:
    if name == "encoder":
        return _EncoderLogits(pipe.encoder)
    if name in ("evaluator", "refiner"):
        return _TokenLogits(getattr(pipe, name), masks=name == "refiner")
    return pipe.vqvae.decoder


def _cache_key(module: nn.Module, config: dict, name: str) -> str:
    import openvino

    digest = hashlib.sha256(f"{name}|{openvino.__version__}|{json.dumps(config, sort_keys=True, default=str)}".encode())
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _component_config(pipe, name: str) -> dict:
    """The architecture's config entries: diffusers' private ones (``_name_or_path``, ``_use_default_values``,
    a list whose order changes from process to process, ...) would give the same network another key."""
    config = (pipe.vqvae if name == "decoder" else getattr(pipe, name)).config
    return {key: value for key, value in config.items() if not key.startswith("_")}


def _ir_path(pipe, name: str, notify: Callable[[str], None] | None = None) -> Path:
    """The IR of this network, converted and saved atomically on first use (announced to ``notify``)."""
    import openvino

    module = _traceable(pipe, name)
    path = cache_dir() / _cache_key(module, _component_config(pipe, name), name) / f"{name}.xml"
    if path.is_file():
        return path
    if notify is not None:  # a large model converts for minutes: say why the first run waits
        notify(f"converting {name} to OpenVINO, once for these weights (cached in {cache_dir()})")
    example = _example_inputs(pipe, name)
    shapes = [openvino.PartialShape([-1] * t.ndim) for t in example]
    # The trace warns at each Python branch on a size (Swin's padding and window clamp, diffusers' upsampling);
    # the pipeline pads every token grid to a multiple of all windows, so the traced branches are the ones it takes.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = openvino.convert_model(module.eval(), example_input=example, input=shapes)
    save_ir(model, path)
    return path


def save_ir(model, path: Path, extra_files: dict[str, str] | None = None) -> None:
    """Save an OpenVINO model as ``path`` (``<key>/<name>.xml``), with ``extra_files`` (name: text) beside it,
    atomically: written in a staging folder that is renamed into place, so a crash leaves nothing half-written and
    two processes cannot mix their files."""
    import openvino

    path.parent.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent.parent) as staging:
        openvino.save_model(model, str(Path(staging) / path.name), compress_to_fp16=False)
        for name, text in (extra_files or {}).items():
            (Path(staging) / name).write_text(text)
        try:
            Path(staging).rename(path.parent)
        except OSError:  # another process saved it first
            if not path.is_file():
                raise


#: The networks that run at the output resolution: their OpenVINO buffers are freed after each call.
_FULL_RESOLUTION = ("encoder", "decoder")

#: Compiled input shapes kept per network: a tiled image has at most four run shapes (corner, two edges, centre).
_SHAPES_KEPT = 4


class _CompiledNetwork:
    """An OpenVINO network called with torch tensors; returns torch tensors on the input's device.

    The IR has dynamic sizes, but each call runs a copy compiled for its exact input shapes (about half a second
    the first time a shape comes, from OpenVINO's blob cache after that). With static shapes OpenVINO plans and
    reuses its buffers: on an 800×600 default-path tile, E_l's peak memory fell from 942 to 652 MB and the
    decoder's from 721 to 440 MB against the dynamic-shape compile (AVX2, outputs the same within float rounding).

    ``release_memory``: free OpenVINO's intermediate buffers after each call. Left alone, each compiled network
    keeps the buffers of its largest call, so E_l's and the decoder's full-resolution activations would be held
    side by side for the whole run (measured: 2.69 GB peak against 2.08 GB on the 800×600 default path).
    """

    def __init__(self, path: Path, core, release_memory: bool = False):
        self.path, self.core, self.release_memory = path, core, release_memory
        self.compiled: dict[tuple, object] = {}  # input shapes -> compiled model, oldest first
        self.recorded: list | None = None  # when a list, every call's inputs are appended (int8 calibration)

    def use_ir(self, path: Path) -> None:
        """Run another IR of the same network from now on (its int8 version)."""
        self.path = path
        self.forget_shapes()

    def forget_shapes(self) -> None:
        """Drop the copies compiled so far, and the buffers they hold (compiled again, from OpenVINO's blob cache,
        when a shape comes back)."""
        self.compiled.clear()

    def _for_shapes(self, arrays: list) -> object:
        shapes = tuple(array.shape for array in arrays)
        if shapes not in self.compiled:
            if len(self.compiled) == _SHAPES_KEPT:
                del self.compiled[next(iter(self.compiled))]
            model = self.core.read_model(str(self.path))
            model.reshape({port: list(shape) for port, shape in zip(model.inputs, shapes)})
            self.compiled[shapes] = self.core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return self.compiled[shapes]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        arrays = [t.detach().cpu().contiguous().numpy() for t in inputs if t is not None]
        if self.recorded is not None:
            self.recorded.append([array.copy() for array in arrays])
        model = self._for_shapes(arrays)
        result = torch.from_numpy(model(arrays)[0].copy())
        if self.release_memory:
            model.release_memory()
        return result


def use_openvino(pipe, networks: tuple[str, ...] = OPENVINO_NETWORKS, int8: bool = False,
                 notify: Callable[[str], None] | None = None, int8_min_psnr: float | None = None) -> bool:
    """Route ``networks`` of ``pipe`` (fp32, on the CPU) through OpenVINO, in place.

    The modules stay where they are (configs, ``save_pretrained`` and the weights are unchanged); only their
    forward passes run in OpenVINO, through the compiled network each keeps as ``module.openvino_network``. ``int8=True`` then runs the decoder quantised to int8
    (:mod:`.openvino_int8`; lossy, needs NNCF and all four networks on OpenVINO: the tokens stay exact). Raises ImportError (with the install
    command) when OpenVINO or NNCF is missing and ValueError for a network that is not fp32 on the CPU. ``notify``
    (e.g. ``print``) is told of each one-off step (a conversion, the int8 calibration) before it starts.
    ``int8_min_psnr``: keep the decoder fp32 if its int8 version measured less (dB, see :mod:`.openvino_int8`).
    Returns whether the decoder runs in int8.
    """
    try:
        import openvino
    except ImportError:
        raise ImportError("the OpenVINO engine needs OpenVINO: pip install 'iter-diffusers[openvino]'") from None
    unknown = sorted(set(networks) - set(OPENVINO_NETWORKS))
    if unknown:
        raise ValueError(f"unknown networks {unknown}; choose from {OPENVINO_NETWORKS}")
    if int8:
        if importlib.util.find_spec("nncf") is None:
            raise ImportError("the int8 mode needs NNCF: pip install 'iter-diffusers[openvino]'")
        if set(networks) != set(OPENVINO_NETWORKS):
            raise ValueError(f"the int8 mode runs all of {OPENVINO_NETWORKS} on OpenVINO (it calibrates on them)")
    core = openvino.Core()
    core.set_property({"CACHE_DIR": str(cache_dir() / "compiled")})
    for name in networks:
        module = network_module(pipe, name)
        parameter = next(module.parameters())
        if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
            raise ValueError(f"the OpenVINO engine runs fp32 networks on the CPU; {name} is {parameter.dtype} on "
                             f"{parameter.device}")
        module.openvino_network = _CompiledNetwork(_ir_path(pipe, name, notify), core,
                                                   release_memory=name in _FULL_RESOLUTION)
        module.forward = _forward_for(name, module.openvino_network)
    if not int8:
        return False
    from .openvino_int8 import quantize_decoder

    return quantize_decoder(pipe, notify, int8_min_psnr)


def _forward_for(name: str, compiled: _CompiledNetwork):
    """A replacement ``forward`` with the torch network's signature and output type."""
    if name == "encoder":
        def forward(sample, return_dict=True):
            logits = compiled(sample)
            return ITERLatentLogitsOutput(logits=logits) if return_dict else (logits,)
    elif name in ("evaluator", "refiner"):
        def forward(tokens, condition_tokens, visible_mask=None, trusted_mask=None, return_dict=True):
            logits = compiled(tokens, condition_tokens, visible_mask, trusted_mask)
            return ITERLogitsOutput(logits=logits) if return_dict else (logits,)
    else:
        def forward(quant):
            return compiled(quant)
    return forward
