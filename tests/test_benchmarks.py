"""The benchmarks run end to end (on a tiny random model and tiny inputs: their figures are not checked here)."""

import subprocess
import sys
from pathlib import Path

from iter_diffusers.pipelines.openvino_engine import openvino_available
from iter_diffusers.pipelines.openvino_int8 import int8_available

ROOT = Path(__file__).parents[1]


def _run(*argv: str) -> str:
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_bench_modes_prints_every_section():
    out = _run("benchmarks/bench_modes.py", "--config", "configs/iter_x4_tiny.json", "--size", "16", "--runs", "2",
               "--agreement_size", "32", "--growth", "16,32")
    assert "CPU: torch CPU kernels:" in out and "--dtype auto here:" in out
    assert "| fp32 (exact) |" in out
    # the OpenVINO row where it is installed (the README's test command installs it), else a line saying so
    assert ("| fp32 on OpenVINO |" in out) == openvino_available()
    assert ("fp32 on OpenVINO: left out" in out) != openvino_available()
    assert ("| OpenVINO, int8 decoder |" in out) == int8_available()  # and the int8 decoder where NNCF is too
    assert ("OpenVINO, int8 decoder: left out" in out) != int8_available()
    assert "## agreement with our fp32" in out and "## growth with the input side" in out
    assert out.count("| iter_x4_tiny, fp32 |") == 2


def test_bench_default_path_runs_each_method_in_its_own_process():
    out = _run("benchmarks/bench_default_path.py", "--size", "32x24", "--skip", "realesrgan")
    assert "bicubic" in out and "iter " in out and "iter / bicubic:" in out and "peak RSS" in out
    assert "iter start-up:" in out  # process start to the pipeline loaded, reported on its own line


def test_gpu_check_dry_run_on_the_cpu():
    """The prepared GPU script runs end to end (here on the CPU, tiny sizes), so a lent GPU is not spent on bugs."""
    out = _run("benchmarks/gpu_check.py", "--device", "cpu", "--size", "16", "--dtypes", "bfloat16", "--runs", "1")
    assert "bfloat16  finite outputs: True" in out and "## speed on cpu" in out
