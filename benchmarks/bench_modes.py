#!/usr/bin/env python
"""Every inference mode side by side, interleaved in one process: speed, per-network time, memory, agreement.

    python benchmarks/bench_modes.py                                     # paper-size random model, 128² -> 512²
    python benchmarks/bench_modes.py --official_repo /path/to/ITER      # plus the official code, same weights
    python benchmarks/bench_modes.py --compile --growth 64,128,256,512

Speed (``--size``, ``--runs``): the paper-size x4 model with random weights (seed 0; all T steps run, as random
φ_e trusts nothing), one input, seed 123 for every mode. The official code (``--official_repo``, a checkout of
github.com/chaofengc/ITER; needs ``einops``) runs the same weights, converted. Modes: our fp32 (exact: the
official output to < 1e-4), bf16 (only where the CPU computes it natively), fp32 through OpenVINO (when installed;
its first call, with the conversion of the four networks into the cache, is printed apart from the steady state),
and with ``--compile`` the auto mode compiled (first call and steady state). For each: seconds per image (best of the runs), E_l / φ_e / φ_r / decoder
time, the ratio to the official fp32 run (or to ours), the peak RSS during the run and its rise over the run's
start.

Agreement: the bundled trained model on the coffee sample (``--agreement_size``), each mode against our fp32 with
the same seed: PSNR of the images and the fraction of equal final tokens.

Growth (``--growth``): the auto mode on the bundled model and our fp32 on the paper-size model for each input
side (untiled), to show how time and the memory of a run grow with the input. The full-process peak RSS of the
default path at a given size is what ``bench_default_path.py`` measures (one fresh process per method).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import statistics
import sys
import tempfile
import threading
import time
import types
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from iter_diffusers import DEMO_MODEL_PATH, ITERPipeline
from iter_diffusers.pipelines.acceleration import choose_mode, cpu_capabilities, cpu_has_native_bf16, optimize_pipeline
from iter_diffusers.pipelines.openvino_engine import openvino_available, use_openvino
from iter_diffusers.pipelines.openvino_int8 import int8_available

ROOT = Path(__file__).parents[1]
PAPER_CONFIG = ROOT / "configs" / "iter_x4.json"
SAMPLE = ROOT / "examples" / "images" / "coffee_lq.png"
PARTS = {"E_l": "encoder", "φ_e": "evaluator", "φ_r": "refiner", "decoder": "vqvae.decoder"}
OFFICIAL_PARTS = {"E_l": "lq_encoder", "φ_e": "token_refine_net.token_crit_net",
                  "φ_r": "token_refine_net.token_refine_net", "decoder": "vqgan.decoder"}


# ---------------------------------------------------------------------------------------------- measuring
class PeakRSS:
    """Highest resident set size of this process while the block runs (sampled every 5 ms from /proc)."""

    def __init__(self):
        self.start = self.peak = _rss()
        self._stop = threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def part_timers(model, parts: dict[str, str]) -> dict[str, float]:
    """Forward hooks adding up the seconds spent in each named submodule; returns the (live) totals."""
    spent: dict[str, float] = defaultdict(float)

    def timer(label: str):
        started = 0.0

        def before(module, args):
            nonlocal started
            started = time.perf_counter()

        def after(module, args, output):
            spent[label] += time.perf_counter() - started

        return before, after

    for label, path in parts.items():
        before, after = timer(label)
        component, _, inner = path.partition(".")  # a pipeline is not a Module: its components are
        module = getattr(model, component).get_submodule(inner)
        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)
    return spent


def flops_per_call(pipe: ITERPipeline, side: int) -> dict[str, float]:
    """Floating-point operations of one call of each network on a ``side``² input (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    height, width = pipe.padded_size(side, side)
    grid = (1, height // pipe.encoder.pixels_per_token, width // pipe.encoder.pixels_per_token)
    tokens, mask = torch.zeros(grid, dtype=torch.long), torch.ones(grid)
    calls = {"E_l": lambda: pipe.encoder(torch.zeros(1, 3, height, width)),
             "φ_e": lambda: pipe.evaluator(tokens, tokens),
             "φ_r": lambda: pipe.refiner(tokens, tokens, visible_mask=mask, trusted_mask=mask),
             "decoder": lambda: pipe.vqvae.decode(tokens)}
    flops = {}
    for name, call in calls.items():
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call()
        flops[name] = counter.get_total_flops()
    return flops


def matmul_ceiling(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a large fp32 matrix product here: what the token networks' Linear layers could reach."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


# ---------------------------------------------------------------------------------------------- the models
def paper_size_pipeline(config_path: Path = PAPER_CONFIG) -> ITERPipeline:
    """The paper's x4 architecture (or another ``configs/`` file) with random weights, seed 0."""
    from iter_diffusers import (ITERDistortionRemovalEncoder, ITERRefinementTransformer, ITERTokenEvaluator,
                                ITERVQModel, MaskedTokenScheduler)

    config = json.loads(config_path.read_text())
    torch.manual_seed(0)
    pipe = ITERPipeline(vqvae=ITERVQModel(**config["vqvae"]), encoder=ITERDistortionRemovalEncoder(**config["encoder"]),
                        evaluator=ITERTokenEvaluator(**config["evaluator"]),
                        refiner=ITERRefinementTransformer(**config["refiner"]), scheduler=MaskedTokenScheduler())
    return _ready(pipe)


def _ready(pipe: ITERPipeline) -> ITERPipeline:
    pipe.set_progress_bar_config(disable=True)
    for name in ("vqvae", "encoder", "evaluator", "refiner"):
        getattr(pipe, name).eval()
    return pipe


def official_with_our_weights(repo: Path):
    """The official ``ITER`` model (only ``basicsr/archs`` of the checkout is imported, its other imports
    stubbed), with random weights (seed 0), and our pipeline converted from exactly those weights."""
    from iter_diffusers.conversion import convert_official_checkpoints

    def stub(name: str, **attributes):
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        sys.modules[name] = module

    registry = types.SimpleNamespace(register=lambda: (lambda cls: cls))
    stub("turtle", forward=None)  # iter_utils.py imports it by accident
    stub("timm"), stub("timm.models")
    stub("timm.models.layers", DropPath=lambda *a, **k: torch.nn.Identity(), trunc_normal_=torch.nn.init.trunc_normal_,
         to_2tuple=lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x))
    stub("basicsr", __path__=[str(repo / "basicsr")])
    stub("basicsr.utils", __path__=[])
    stub("basicsr.utils.registry", ARCH_REGISTRY=registry)
    stub("basicsr.archs", __path__=[str(repo / "basicsr" / "archs")])
    official_class = importlib.import_module("basicsr.archs.iter_arch").ITER
    vq = {"in_channels": 3, "emb_dim": 128, "resolution": [256, 256], "nf": 128, "swin_dim": 256, "swin_window": 8,
          "swin_blk_depth": 6, "swin_blk_num": 1, "ch_mult": [1, 2, 2, 4]}
    torch.manual_seed(0)
    official = official_class(scale_factor=4, LQ_stage=True, codebook_params=[[32, 1024, 512]],
                              vqgan_opt={"ckpt_path": None, "n_embed": 512, "embed_dim": 128, "ddconfig": vq}).eval()
    official.set_sample_params(8, 1.0, 1.0, 0.7, "linear")
    state = official.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"params": {k[6:]: v for k, v in state.items() if k.startswith("vqgan.")}}, f"{tmp}/vq.pth")
        torch.save({"params": state}, f"{tmp}/x4.pth")
        pipe = convert_official_checkpoints(f"{tmp}/vq.pth", f"{tmp}/x4.pth")
    return official, _ready(pipe)


def modes_of(pipe: ITERPipeline, compile: bool) -> dict[str, ITERPipeline]:
    """Our modes, each on its own copy of ``pipe``: exact fp32, bf16 (only where the CPU computes it natively:
    elsewhere it is hundreds of times slower), fp32 and int8 through OpenVINO (when installed), and the compiled
    auto mode."""
    modes = {"fp32 (exact)": pipe}
    if cpu_has_native_bf16():
        modes["bf16"] = copy.deepcopy(pipe)
        optimize_pipeline(modes["bf16"], "bfloat16")
    else:
        print("bf16: left out (no native bf16 here: no avx512_bf16/AMX, or torch's kernels capped below AVX-512)")
    if openvino_available():
        openvino = copy.deepcopy(pipe)
        started = time.perf_counter()
        use_openvino(openvino)
        print(f"OpenVINO: the four networks converted (or read from the cache) and compiled in "
              f"{time.perf_counter() - started:.1f} s")
        modes["fp32 on OpenVINO"] = openvino
    else:
        print("fp32 on OpenVINO: left out (pip install 'iter-diffusers[openvino]')")
    if int8_available():
        int8 = copy.deepcopy(pipe)
        started = time.perf_counter()
        use_openvino(int8, int8=True)
        print(f"int8 decoder on OpenVINO: calibrated and quantised (or read from the cache) in "
              f"{time.perf_counter() - started:.1f} s")
        modes["OpenVINO, int8 decoder"] = int8
    else:
        print("OpenVINO, int8 decoder: left out (needs OpenVINO and NNCF: pip install 'iter-diffusers[openvino]')")
    if compile:
        compiled = copy.deepcopy(pipe)
        optimize_pipeline(compiled, "auto", compile=True)
        modes["compiled auto"] = compiled
    return modes


# ---------------------------------------------------------------------------------------------- sections
def speed(args) -> None:
    official = None
    if args.official_repo:
        official, pipe = official_with_our_weights(args.official_repo.resolve())
    else:
        pipe = paper_size_pipeline(args.config)
    modes = modes_of(pipe, args.compile)
    timers = {name: part_timers(p, PARTS) for name, p in modes.items() if not name.startswith("compiled")}
    if official is not None:
        timers["official fp32"] = part_timers(official, OFFICIAL_PARTS)
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    seconds, rss, parts, outputs = defaultdict(list), {}, {}, {}
    for run in range(args.runs):
        for name in (["official fp32"] if official is not None else []) + list(modes):
            spent = timers.get(name, {})
            spent.clear()
            with PeakRSS() as memory, torch.no_grad():
                started = time.perf_counter()
                if name == "official fp32":
                    torch.manual_seed(123)
                    outputs[name] = official.test(x)[0]
                else:
                    outputs[name] = modes[name](x, generator=torch.Generator().manual_seed(123), output_type="pt",
                                                tile_size=None).images.float()
                seconds[name].append(time.perf_counter() - started)
            rss[name] = (memory.peak, memory.peak - memory.start)
            parts[name] = dict(spent)
    reference = seconds["official fp32" if official is not None else "fp32 (exact)"]
    print(f"\n## speed: {args.config.stem} model (random weights), {args.size}² -> {4 * args.size}², untiled, "
          f"{args.runs} interleaved runs\n")
    print("| mode | s/image (best) | runs (s) | E_l | φ_e | φ_r | decoder | speed-up | peak RSS | rise |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, times in seconds.items():
        shown = [f"{parts[name].get(p, float('nan')):.2f}" if parts[name] else "–" for p in PARTS]
        if name.startswith("compiled"):
            shown[0] = f"first call {times[0]:.1f} s"
        best = min(times[1:]) if name.startswith("compiled") and len(times) > 1 else min(times)
        print(f"| {name} | {best:.2f} | {', '.join(f'{t:.1f}' for t in times)} | {' | '.join(shown)} | "
              f"{min(reference) / best:.2f}× | {rss[name][0] / 2**30:.2f} GB | {rss[name][1] / 2**30:.2f} GB |")
    if official is not None:
        gap = (outputs["official fp32"] - outputs["fp32 (exact)"]).abs().max().item()
        print(f"\nmax |official − ours fp32| = {gap:.2e}")
    flops = flops_per_call(pipe, args.size)
    calls = {"E_l": 1, "φ_e": 8, "φ_r": 8, "decoder": 1}  # T = 8, every step run (random weights)
    achieved = ", ".join(f"{name} {flops[name] * calls[name] / parts['fp32 (exact)'][name] / 1e9:.0f}"
                         for name in PARTS if parts["fp32 (exact)"].get(name))
    print(f"our fp32 GFLOP/s per network: {achieved}; a 2048² fp32 matmul here: {matmul_ceiling():.0f} GFLOP/s "
          f"(GFLOP per call: {', '.join(f'{k} {v / 1e9:.0f}' for k, v in flops.items())})")
    print(f"(speed-up: over {'the official fp32 run' if official is not None else 'our fp32 run'}; "
          "compiled: best of the runs after the first)")


def agreement(args) -> None:
    from PIL import Image

    pipe = _ready(ITERPipeline.from_pretrained(DEMO_MODEL_PATH))
    image = Image.open(SAMPLE).convert("RGB").resize((args.agreement_size, args.agreement_size), Image.BICUBIC)
    modes = modes_of(pipe, compile=False)

    def run(p, output_type):
        return p(image, generator=torch.Generator().manual_seed(0), output_type=output_type, tile_size=None).images

    base_image, base_tokens = run(pipe, "np"), run(pipe, "latent")
    print(f"\n## agreement with our fp32: the bundled model, coffee sample at {args.agreement_size}², seed 0\n")
    print("| mode | PSNR vs fp32 (dB) | equal final tokens |")
    print("|---|---|---|")
    for name, p in modes.items():
        if p is pipe:
            continue
        mse = float(np.mean((run(p, "np").astype(np.float64) - base_image) ** 2))
        tokens = (run(p, "latent") == base_tokens).float().mean().item()
        print(f"| {name} | {10 * np.log10(1 / max(mse, 1e-20)):.1f} | {100 * tokens:.1f} % |")


def growth(args) -> None:
    sides = [int(s) for s in args.growth.split(",")]
    bundled = _ready(ITERPipeline.from_pretrained(DEMO_MODEL_PATH))
    mode = optimize_pipeline(bundled, "auto")
    models = {f"bundled, auto ({mode.name})": bundled, f"{args.config.stem}, fp32": paper_size_pipeline(args.config)}
    print("\n## growth with the input side (x4, untiled, one run each)\n")
    print("| model | LQ side | s/image | rise of RSS during the run |")
    print("|---|---|---|---|")
    for name, pipe in models.items():
        for side in sides:
            x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
            with PeakRSS() as memory:
                started = time.perf_counter()
                pipe(x, generator=torch.Generator().manual_seed(123), output_type="pt", tile_size=None)
                spent = time.perf_counter() - started
            print(f"| {name} | {side} | {spent:.2f} | {(memory.peak - memory.start) / 2**30:.2f} GB |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="LQ side of the speed section (default 128)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--config", type=Path, default=PAPER_CONFIG, help="model sizes of the random model "
                        "(default: configs/iter_x4.json, the paper's; not used with --official_repo)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--official_repo", type=Path, default=None, help="a checkout of github.com/chaofengc/ITER")
    parser.add_argument("--compile", action="store_true", help="also the compiled auto mode (minutes to compile)")
    parser.add_argument("--agreement_size", type=int, default=128)
    parser.add_argument("--growth", default="", help="LQ sides for the growth section, e.g. 64,128,256,512")
    parser.add_argument("--sections", default="speed,agreement,growth")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = choose_mode("cpu")
    print(f"CPU: {cpu_capabilities()}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"--dtype auto here: {auto.name} ({auto.reason})")
    sections = set(args.sections.split(","))
    if "speed" in sections:
        speed(args)
    if "agreement" in sections:
        agreement(args)
    if "growth" in sections and args.growth:
        growth(args)


if __name__ == "__main__":
    main()
