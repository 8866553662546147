"""The hardware-chosen fast modes (``--dtype auto``), compiled mode, and their agreement with fp32.

The choice is tested on every kind of CPU by replacing the flags the CPU reports; the bf16 run itself only where
the CPU computes bf16 natively (on others it would be hundreds of times slower, which is the point of the choice).
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import seeded
from iter_diffusers import DEMO_MODEL_PATH, ITERPipeline
from iter_diffusers.pipelines import acceleration
from iter_diffusers.pipelines.acceleration import (choose_mode, compile_networks, cpu_capabilities, optimize_pipeline,
                                                   slow_dtype_message)

AVX2_ONLY = frozenset({"avx", "avx2", "fma"})
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512_bf16"}
NATIVE_BF16 = acceleration.cpu_has_native_bf16()


@pytest.fixture
def cpu_kind(monkeypatch):
    """Pretend to be a CPU with ``flags``, torch's kernels following them (AVX512 with avx512f, else AVX2)."""
    def use(flags):
        monkeypatch.setattr(acceleration, "cpu_flags", lambda: flags)
        capability = "AVX512" if "avx512f" in flags else "AVX2"
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    return use


def test_torch_kernels_capped_to_avx2_count_as_no_native_bf16(cpu_kind, monkeypatch):
    """ATEN_CPU_CAPABILITY=avx2 on an avx512_bf16 CPU (how this project measures the AVX2-only path): torch's bf16
    is then emulated, so auto must not pick it."""
    cpu_kind(AVX512_BF16)
    assert acceleration.cpu_has_native_bf16()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not acceleration.cpu_has_native_bf16() and choose_mode("cpu").dtype == torch.float32


def test_the_mode_follows_the_cpu(cpu_kind, monkeypatch):
    cpu_kind(AVX512_BF16)
    mode = choose_mode("cpu")
    assert (mode.dtype, mode.engine) == (torch.bfloat16, "torch") and "bf16" in mode.reason
    cpu_kind(AVX2_ONLY)
    monkeypatch.setattr(acceleration, "int8_available", lambda: True)
    mode = choose_mode("cpu")
    assert (mode.dtype, mode.engine, mode.int8, mode.name) == (torch.float32, "openvino", True,
                                                               "float32 on OpenVINO, int8 decoder")
    assert "--dtype float32 is exact" in mode.reason
    monkeypatch.setattr(acceleration, "int8_available", lambda: False)
    monkeypatch.setattr(acceleration, "openvino_available", lambda: True)
    mode = choose_mode("cpu")
    assert (mode.dtype, mode.engine, mode.int8, mode.name) == (torch.float32, "openvino", False, "float32 on OpenVINO")
    assert "pip install nncf adds the faster int8 decoder" in mode.reason
    monkeypatch.setattr(acceleration, "openvino_available", lambda: False)
    mode = choose_mode("cpu")
    assert (mode.dtype, mode.engine, mode.name) == (torch.float32, "torch", "float32")
    assert "pip install 'iter-diffusers[openvino]'" in mode.reason
    assert "avx2" in cpu_capabilities()


def test_the_engine_switch(pipe, cpu_kind, monkeypatch):
    """engine="torch" keeps torch where auto would pick OpenVINO; OpenVINO refuses what it cannot run."""
    cpu_kind(AVX2_ONLY)
    monkeypatch.setattr(acceleration, "int8_available", lambda: True)
    ran = []
    monkeypatch.setattr(acceleration, "use_openvino",  # as if every int8 decoder measured faithful
                        lambda p, int8, notify=None, int8_min_psnr=None: ran.append((p, int8)) or int8)
    mode = optimize_pipeline(pipe, "auto", engine="torch")  # auto would pick int8 on OpenVINO
    assert (mode.engine, mode.int8) == ("torch", False) and ran == []
    assert optimize_pipeline(pipe, "float32", engine="openvino").engine == "openvino" and ran == [(pipe, False)]
    assert optimize_pipeline(pipe, "int8").int8 and ran[-1] == (pipe, True)
    assert optimize_pipeline(pipe, "auto", engine="openvino").int8 is False  # the engine alone: exact fp32
    with pytest.raises(ValueError, match="int8 mode runs on the OpenVINO engine"):
        optimize_pipeline(pipe, "int8", engine="torch")
    assert optimize_pipeline(pipe, "float32").engine == "torch"  # an explicit dtype alone stays torch, exact
    cpu_kind(AVX512_BF16)  # auto would pick bf16; the OpenVINO engine takes fp32 instead
    assert optimize_pipeline(pipe, "auto", engine="openvino").dtype == torch.float32 == pipe.refiner.dtype
    with pytest.raises(ValueError, match="runs fp32 on the CPU"):
        optimize_pipeline(pipe, "bfloat16", engine="openvino")
    pipe.to(torch.float32)
    with pytest.raises(ValueError, match="compile is for the torch engine"):
        optimize_pipeline(pipe, "auto", compile=True, engine="openvino")
    with pytest.raises(ValueError, match="engine must be one of"):
        optimize_pipeline(pipe, "auto", engine="onnx")


@pytest.mark.parametrize("bf16_supported,dtype", [(True, torch.bfloat16), (False, torch.float16)])
def test_the_mode_on_cuda(monkeypatch, bf16_supported, dtype):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    assert choose_mode("cuda").dtype == dtype


def test_slow_dtypes_are_named(cpu_kind):
    cpu_kind(AVX2_ONLY)
    assert "hundreds of times slower" in slow_dtype_message(torch.bfloat16, "cpu")
    assert "fp16" in slow_dtype_message(torch.float16, "cpu")
    assert slow_dtype_message(torch.float32, "cpu") is None
    assert slow_dtype_message(torch.bfloat16, "cuda") is None
    cpu_kind(AVX512_BF16)
    assert slow_dtype_message(torch.bfloat16, "cpu") is None


def test_explicit_bf16_on_a_cpu_without_it_warns(pipe, cpu_kind):
    cpu_kind(AVX2_ONLY)
    with pytest.warns(UserWarning, match="hundreds of times slower"):
        mode = optimize_pipeline(pipe, "bfloat16")
    assert mode.dtype == pipe.refiner.dtype == torch.bfloat16
    pipe.to(torch.float32)  # the fixture is shared


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def demo_input():
    from PIL import Image

    return Image.open(Path(__file__).parents[1] / "examples" / "images" / "coffee_lq.png").convert("RGB")


def _demo_output(pipe, image):
    return pipe(image, generator=seeded(0), output_type="np", tile_size=None).images[0]


@pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no avx512_bf16/AMX: a bf16 run would take far too long "
                                            "(the mode test above covers the choice)")
def test_bf16_mode_on_the_bundled_model(demo_input):
    pipe = ITERPipeline.from_pretrained(DEMO_MODEL_PATH)
    pipe.set_progress_bar_config(disable=True)
    reference = _demo_output(pipe, demo_input)
    assert optimize_pipeline(pipe, "auto").dtype == torch.bfloat16
    assert pipe.vqvae.dtype == pipe.refiner.dtype == torch.bfloat16
    assert _psnr(_demo_output(pipe, demo_input), reference) >= 35


def test_the_networks_compile_without_graph_breaks(converted_dir):
    """fullgraph=True turns any graph break into an error; the eager backend checks the tracing, not a compiler."""
    pipe = ITERPipeline.from_pretrained(converted_dir)
    pipe.set_progress_bar_config(disable=True)
    x = torch.rand(1, 3, 16, 16, generator=seeded(0))
    reference = pipe(x, generator=seeded(), num_inference_steps=2, output_type="pt").images
    compile_networks(pipe, backend="eager", fullgraph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. dynamo tracing through a cache wrapper
        out = pipe(x, generator=seeded(), num_inference_steps=2, output_type="pt").images
    torch.testing.assert_close(out, reference, atol=1e-6, rtol=0)
