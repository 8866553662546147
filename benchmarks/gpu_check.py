#!/usr/bin/env python
"""The GPU check, as one script: half-precision correctness on the tiny fixtures, then speed at the paper's size.

    python benchmarks/gpu_check.py                       # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --size 16 --dtypes bfloat16   # a dry run of the script itself

1. Correctness: the tiny official checkpoints (tests/fixtures/official), converted, run in fp32 and in each of
   ``--dtypes`` on ``--device`` with the same seed: every output must be finite and the final tokens are compared
   (printed as the fraction equal to fp32's; the script exits 1 if an output is not finite).
2. Speed: the paper-size x4 model (random weights) on a ``--size``² input (default 512² -> 2048²) untiled, fp32
   against the ``--dtype auto`` mode, best of ``--runs`` after a warm-up, with the peak GPU memory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_modes import paper_size_pipeline  # noqa: E402

from iter_diffusers import ITERPipeline  # noqa: E402
from iter_diffusers.conversion import convert_and_save  # noqa: E402
from iter_diffusers.pipelines.acceleration import optimize_pipeline  # noqa: E402

FIXTURES = Path(__file__).parents[1] / "tests" / "fixtures" / "official"


def correctness(device: torch.device, dtypes: list[str]) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        folder = convert_and_save(FIXTURES / "tiny_swinvqgan.pth", FIXTURES / "tiny_iter_x4.pth", Path(tmp) / "tiny")
        reference = ITERPipeline.from_pretrained(folder).to(device)
        pipes = {name: ITERPipeline.from_pretrained(folder, dtype=getattr(torch, name)).to(device) for name in dtypes}
    inputs = torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    ok = True
    print(f"## correctness on {device}: tiny fixtures, 2 inputs 40x48, seed 123, T = 8\n")
    for name, pipe in {"float32": reference, **pipes}.items():
        pipe.set_progress_bar_config(disable=True)
        images = pipe(inputs, generator=torch.Generator(device).manual_seed(123), output_type="pt").images
        tokens = pipe(inputs, generator=torch.Generator(device).manual_seed(123), output_type="latent").images
        if name == "float32":
            reference_tokens = tokens
        finite = bool(torch.isfinite(images).all())
        ok &= finite
        equal = (tokens == reference_tokens).float().mean().item()
        print(f"{name:9s} finite outputs: {finite}; final tokens equal to fp32's: {100 * equal:.1f} %")
    return ok


def speed(device: torch.device, size: int, runs: int) -> None:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    print(f"\n## speed on {device}: paper-size x4 model (random weights), {size}² -> {4 * size}², untiled\n")
    for label in ("float32", "auto"):
        pipe = paper_size_pipeline().to(device)
        mode = optimize_pipeline(pipe, label)
        times = []
        for _ in range(runs + 1):  # the first run warms up kernels and allocator
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            pipe(x, generator=torch.Generator(device).manual_seed(123), output_type="pt", tile_size=None)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        print(f"{label:8s} ({mode.name}): best {min(times[1:]):.2f} s of {runs}, first {times[0]:.2f} s, "
              f"peak GPU memory {peak:.2f} GiB")
        del pipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}; torch {torch.__version__}")
    ok = correctness(device, args.dtypes.split(","))
    speed(device, args.size, args.runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
