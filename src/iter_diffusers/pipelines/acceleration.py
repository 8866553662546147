"""The fastest numerics for the hardware a pipeline runs on: ``iter-sr --dtype auto`` and :func:`optimize_pipeline`.

The wrong choice is catastrophic rather than merely slow: on a CPU without native bf16 (AVX2 only), bf16
convolutions run hundreds of times slower than fp32. So the mode is chosen from what the CPU reports:

* CUDA: bf16 where the GPU computes it natively, else fp16.
* CPU with ``avx512_bf16`` or AMX: bf16 weights and activations.
* Other CPUs: with OpenVINO and NNCF installed (``pip install iter-diffusers[openvino]``), the networks on
  OpenVINO with the decoder in int8 (:mod:`.openvino_int8`: the tokens exact, the rendering lossy), where the int8
  decoder measured at least 35 dB against fp32 for the weights at hand, else all fp32; with OpenVINO
  alone, fp32 through OpenVINO (exact, :mod:`.openvino_engine`); else torch fp32. Speed-ups: docs/benchmarks.md.

torch.ao's int8 dynamic quantisation, the earlier choice for AVX2-only CPUs, is deprecated; its successor torchao
(0.18, ``Int8DynamicActivationInt8WeightConfig``) measured 0.98x of fp32 on these CPUs, and NNCF's int8-compressed
weights (int8 weights, float activations) do not run on OpenVINO's AVX2 kernels; NNCF's static quantisation
(int8 weights and activations) does.

Whatever the mode, the VQ code search, the softmaxes of φ_e and φ_r and every random draw stay in fp32 (the
networks and the scheduler cast to fp32 there), so the tokens move only where the networks' logits move.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .openvino_engine import openvino_available, use_openvino
from .openvino_int8 import AUTO_MIN_PSNR, int8_available
from .options import ENGINES

#: ``/proc/cpuinfo`` flags that mean the CPU multiplies bf16 natively.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_TOKEN_NETWORKS = ("encoder", "evaluator", "refiner")
#: Why a CPU gets neither bf16 nor fp16 (the start of each such mode's reason).
NO_NATIVE_BF16 = "the CPU has no native bf16 (bf16 would be far slower)"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_capabilities() -> str:
    """One line naming the vector units that matter for the choice (printed by the benchmarks and ``iter-sr``)."""
    flags = cpu_flags()
    named = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8") if flag in flags]
    return f"torch CPU kernels: {torch.backends.cpu.get_cpu_capability()}; flags: {', '.join(named) or 'unknown'}"


def cpu_has_native_bf16() -> bool:
    """The CPU multiplies bf16 natively and torch uses its AVX-512 kernels (not capped, e.g. by
    ``ATEN_CPU_CAPABILITY=avx2``, under which bf16 is as slow as on an AVX2-only CPU)."""
    capped = torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "NO AVX", "AVX2")
    return not capped and any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


@dataclass(frozen=True)
class InferenceMode:
    """How a pipeline computes: the weights' dtype, the engine that runs the networks (``"torch"`` or
    ``"openvino"``), why, and whether OpenVINO runs the decoder in int8."""

    dtype: torch.dtype
    engine: str
    reason: str
    int8: bool = False

    @property
    def name(self) -> str:
        if self.int8:
            return "float32 on OpenVINO, int8 decoder"
        return str(self.dtype).removeprefix("torch.") + (" on OpenVINO" if self.engine == "openvino" else "")


def choose_mode(device: torch.device | str) -> InferenceMode:
    """The fastest mode measured for this kind of device (``--dtype auto``)."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return InferenceMode(torch.bfloat16, "torch", "CUDA GPU with native bf16")
        return InferenceMode(torch.float16, "torch", "CUDA GPU without native bf16")
    if device.type != "cpu":
        return InferenceMode(torch.float32, "torch", f"{device.type}: no measured faster mode, fp32")
    if cpu_has_native_bf16():
        return InferenceMode(torch.bfloat16, "torch", "the CPU computes bf16 natively (avx512_bf16/AMX)")
    if int8_available():
        return InferenceMode(torch.float32, "openvino", f"{NO_NATIVE_BF16}: OpenVINO with an int8 decoder, the fastest "
                                                        "measured there (exact tokens, lossy rendering; --dtype "
                                                        "float32 is exact)", int8=True)
    if openvino_available():
        return InferenceMode(torch.float32, "openvino", f"{NO_NATIVE_BF16}: fp32 through OpenVINO, exact and faster "
                                                        "than torch's; pip install nncf adds the faster int8 decoder")
    return InferenceMode(torch.float32, "torch", f"{NO_NATIVE_BF16}: fp32; pip install 'iter-diffusers[openvino]' runs "
                                                 "it faster")


def slow_dtype_message(dtype: torch.dtype, device: torch.device | str) -> str | None:
    """Why an explicitly requested dtype will be slow on this device, or None."""
    if torch.device(device).type != "cpu":
        return None
    if dtype == torch.bfloat16 and not cpu_has_native_bf16():
        return ("bf16 on a CPU without avx512_bf16/AMX is emulated and can be hundreds of times slower than fp32; "
                "use dtype auto (or float32)")
    if dtype == torch.float16:
        return "fp16 on a CPU is emulated and slow; use dtype auto (or float32)"
    return None


def optimize_pipeline(pipe, dtype: str | torch.dtype = "auto", compile: bool = False,
                      engine: str = "auto", notify: Callable[[str], None] | None = None) -> InferenceMode:
    """Put ``pipe`` (already on its device) in the fastest mode for that device, or in ``dtype``; returns the mode.

    ``"auto"`` follows :func:`choose_mode`; an explicit dtype is applied as asked (with a warning where it is known
    to be slow); ``"int8"`` runs the networks on OpenVINO with the decoder in int8 (CPU only; ImportError without
    OpenVINO and NNCF).
    ``engine="openvino"`` runs the networks through OpenVINO (fp32 unless ``dtype="int8"``, on the CPU only;
    ImportError when it is not installed), ``"torch"`` never does, ``"auto"`` where :func:`choose_mode` picks it. ``compile=True``
    also compiles the networks (see :func:`compile_networks`; torch engine only). The change is in place; an
    OpenVINO pipeline keeps its torch weights (it saves as before) but cannot move to another device. ``notify`` is
    told of the one-off OpenVINO steps (conversions, the int8 calibration: minutes for a large model) as they start.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    device = pipe._execution_device
    if dtype == "auto":
        mode = choose_mode(device)
    elif dtype == "int8":
        if engine == "torch":
            raise ValueError("the int8 mode runs on the OpenVINO engine, not torch")
        mode = InferenceMode(torch.float32, "openvino", "the int8 decoder asked for (exact tokens, lossy rendering)", int8=True)
    else:
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        message = slow_dtype_message(dtype, device)
        if message:
            warnings.warn(message, stacklevel=2)
        mode = InferenceMode(dtype, "torch", "asked for")
    if engine == "openvino" and dtype == "auto":  # OpenVINO's exact mode is fp32, whatever auto would pick
        mode = InferenceMode(torch.float32, engine, "the openvino engine asked for (fp32, exact)")
    elif engine != "auto" and engine != mode.engine:
        mode = InferenceMode(mode.dtype, engine, f"{mode.reason}; the {engine} engine asked for")
    if mode.engine == "openvino" and (mode.dtype != torch.float32 or torch.device(device).type != "cpu"):
        raise ValueError(f"the OpenVINO engine runs fp32 on the CPU, not {mode.dtype} on {device}")
    if mode.engine == "openvino" and compile:
        raise ValueError("compile is for the torch engine; OpenVINO compiles the networks itself")
    for name in ("vqvae", *_TOKEN_NETWORKS):
        getattr(pipe, name).to(dtype=mode.dtype)  # diffusers' empty keep-in-fp32 warning: filtered in __init__
    if mode.engine == "openvino":
        # auto takes int8 only where it measured faithful for these weights; an explicit int8 is used as asked
        int8_used = use_openvino(pipe, int8=mode.int8, notify=notify,
                                 int8_min_psnr=AUTO_MIN_PSNR if dtype == "auto" else None)
        if mode.int8 and not int8_used:
            mode = InferenceMode(torch.float32, "openvino", f"{NO_NATIVE_BF16}: fp32 through OpenVINO, exact (the "
                                                            f"int8 decoder measured under {AUTO_MIN_PSNR:g} dB "
                                                            "against fp32 for these weights)")
    if compile:
        compile_networks(pipe)
    return mode


def compile_networks(pipe, backend: str = "inductor", fullgraph: bool = True) -> None:
    """``torch.compile`` E_l, φ_e, φ_r and the decoder in place (``dynamic=False``: one graph per token-map size).

    ``fullgraph=True`` makes a graph break an error instead of a silent slowdown. The first call at each size
    compiles (minutes on a CPU), so it pays off only for many images of one size.
    """
    for name in _TOKEN_NETWORKS:
        getattr(pipe, name).compile(backend=backend, fullgraph=fullgraph, dynamic=False)
    pipe.vqvae.decoder.compile(backend=backend, fullgraph=fullgraph, dynamic=False)

