"""The fastest numerics for the hardware a pipeline runs on: ``iter-sr --dtype auto`` and :func:`optimize_pipeline`.

The wrong choice is catastrophic rather than merely slow: on a CPU without native bf16 (AVX2 only), bf16
convolutions run hundreds of times slower than fp32. So the mode is chosen from what the CPU reports:

* CUDA: bf16 where the GPU computes it natively, else fp16.
* CPU with ``avx512_bf16`` or AMX: bf16 weights and activations.
* Other CPUs: fp32, with int8 dynamic quantisation of the token networks' ``nn.Linear`` layers (φ_e, φ_r and E_l's
  Swin layers: most of their time), which needs no native bf16.

Whatever the mode, the VQ code search, the softmaxes of φ_e and φ_r and every random draw stay in fp32 (the
networks and the scheduler cast to fp32 there), so the tokens move only where the networks' logits move.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch
from torch import nn

#: ``/proc/cpuinfo`` flags that mean the CPU multiplies bf16 natively.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_TOKEN_NETWORKS = ("encoder", "evaluator", "refiner")


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
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


@dataclass(frozen=True)
class InferenceMode:
    """How a pipeline computes: the weights' dtype, whether the token networks' Linear layers run in int8, and why."""

    dtype: torch.dtype
    quantize_linear: bool
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.") + (" + int8 linear" if self.quantize_linear else "")


def choose_mode(device: torch.device | str) -> InferenceMode:
    """The fastest mode measured for this kind of device (``--dtype auto``)."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return InferenceMode(torch.bfloat16, False, "CUDA GPU with native bf16")
        return InferenceMode(torch.float16, False, "CUDA GPU without native bf16")
    if device.type != "cpu":
        return InferenceMode(torch.float32, False, f"{device.type}: no measured faster mode, fp32")
    if cpu_has_native_bf16():
        return InferenceMode(torch.bfloat16, False, "the CPU computes bf16 natively (avx512_bf16/AMX)")
    return InferenceMode(torch.float32, True, "the CPU has no native bf16 (bf16 would be far slower): fp32 with "
                                              "int8 dynamic quantisation of the token networks' Linear layers")


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


def quantize_token_networks(pipe) -> None:
    """Replace the ``nn.Linear`` layers of E_l, φ_e and φ_r by int8 dynamically quantised ones (CPU, fp32 weights).

    The decoder is left alone: its time is in convolutions, which dynamic quantisation does not cover.
    """
    from torch.ao.quantization import quantize_dynamic

    for name in _TOKEN_NETWORKS:
        network = getattr(pipe, name)
        if network.device.type != "cpu" or network.dtype != torch.float32:
            raise ValueError(f"int8 dynamic quantisation needs fp32 networks on the CPU, {name} is "
                             f"{network.dtype} on {network.device}")
        with warnings.catch_warnings():  # torch.ao's deprecation notices (still the fastest CPU int8 path here)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            quantize_dynamic(network, {nn.Linear}, dtype=torch.qint8, inplace=True)


def optimize_pipeline(pipe, dtype: str | torch.dtype = "auto", compile: bool = False) -> InferenceMode:
    """Put ``pipe`` (already on its device) in the fastest mode for that device, or in ``dtype``; returns the mode.

    ``"auto"`` follows :func:`choose_mode`; an explicit dtype is applied as asked (with a warning where it is known
    to be slow). ``compile=True`` also compiles the networks (see :func:`compile_networks`). The change is in place;
    a quantised pipeline cannot be saved or moved to another device.
    """
    device = pipe._execution_device
    if dtype == "auto":
        mode = choose_mode(device)
    else:
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        message = slow_dtype_message(dtype, device)
        if message:
            warnings.warn(message, stacklevel=2)
        mode = InferenceMode(dtype, False, "asked for")
    for name in ("vqvae", *_TOKEN_NETWORKS):
        getattr(pipe, name).to(dtype=mode.dtype)  # diffusers' empty keep-in-fp32 warning: filtered in __init__
    if mode.quantize_linear:
        quantize_token_networks(pipe)
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

