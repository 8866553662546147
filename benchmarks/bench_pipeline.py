#!/usr/bin/env python
"""Time ITERPipeline at the paper's size (random weights, fp32, CPU) and break the time down by network.

    python benchmarks/bench_pipeline.py --size 128 --runs 3 --threads 2

Random weights leave φ_e unconfident, so all T steps run (the official benchmark in official-iter.md §9 has the
same property: 0 of 8 steps skipped). Also prints, measured in the same run, how much the one-hot-by-1×1-conv
input and the hand-written window attention of the official code would cost on top, at these shapes.
"""

import argparse
import json
import resource
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from iter_diffusers import (ITERDistortionRemovalEncoder, ITERPipeline, ITERRefinementTransformer, ITERTokenEvaluator,
                            ITERVQModel, MaskedTokenScheduler)

CONFIG = Path(__file__).parents[1] / "configs" / "iter_x4.json"


def build() -> ITERPipeline:
    config = json.loads(CONFIG.read_text())
    torch.manual_seed(0)
    pipe = ITERPipeline(vqvae=ITERVQModel(**config["vqvae"]), encoder=ITERDistortionRemovalEncoder(**config["encoder"]),
                        evaluator=ITERTokenEvaluator(**config["evaluator"]),
                        refiner=ITERRefinementTransformer(**config["refiner"]), scheduler=MaskedTokenScheduler())
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.vqvae, pipe.encoder, pipe.evaluator, pipe.refiner):
        module.eval()
    return pipe


def timed_components(pipe):
    """Forward hooks that add up the seconds and calls of each network (the VQGAN: its decoder)."""
    spent, calls, started = defaultdict(float), defaultdict(int), {}

    def before(name):
        def hook(module, args):
            started[name] = time.perf_counter()
        return hook

    def after(name):
        def hook(module, args, output):
            spent[name] += time.perf_counter() - started[name]
            calls[name] += 1
        return hook

    for name in ("encoder", "evaluator", "refiner", "vqvae"):
        module = getattr(pipe, name)
        target = module.decoder if name == "vqvae" else module
        target.register_forward_pre_hook(before(name))
        target.register_forward_hook(after(name))
    return spent, calls


def attention_overhead(dim=256, heads=8, window=8, tokens=72 * 72, repeats=5) -> tuple[float, float]:
    """Seconds per window-attention call: SDPA vs the explicit softmax(QKᵀ·s + B)V, at one Swin layer's shape."""
    n = window * window
    q, k, v = (torch.randn(tokens // n, heads, n, dim // heads) for _ in range(3))
    bias = torch.randn(1, heads, n, n)

    def sdpa():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    def manual():
        return torch.softmax(q * (dim // heads) ** -0.5 @ k.transpose(-2, -1) + bias, dim=-1) @ v

    results = []
    for fn in (sdpa, manual):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        results.append((time.perf_counter() - start) / repeats)
    return tuple(results)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="LQ side (output is 4× that)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = build()
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    spent, calls = timed_components(pipe)
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    times = []
    for _ in range(args.runs):
        spent.clear(), calls.clear()
        start = time.perf_counter()
        out = pipe(x, generator=torch.Generator().manual_seed(123), output_type="pt", tile_size=None)
        times.append(time.perf_counter() - start)
    assert out.images.shape[-1] == 4 * args.size
    total = times[-1]
    print(f"ITERPipeline x4, {args.size}² -> {4 * args.size}², fp32, {args.threads} threads, random weights")
    print(f"runs (s): {', '.join(f'{t:.1f}' for t in times)}; min {min(times):.1f}, median {statistics.median(times):.1f}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB (after building the model: {rss_model:.2f} GB)")
    print("last run by network:")
    for name in ("encoder", "evaluator", "refiner", "vqvae"):
        print(f"  {name:10s} {calls[name]:2d} calls {spent[name]:6.2f} s  {100 * spent[name] / total:5.1f} %")
    per_eval = spent["evaluator"] / max(1, calls["evaluator"])
    sdpa, manual = attention_overhead(tokens=(args.size // 2 + 8) ** 2 // 64 * 64)
    print(f"official-equivalent extra φ_e calls (2 wasted at T=8): +{2 * per_eval:.2f} s = +{100 * 2 * per_eval / total:.1f} %")
    print(f"window attention, one layer: SDPA {sdpa * 1e3:.2f} ms vs explicit {manual * 1e3:.2f} ms (ratio {manual / sdpa:.2f}×)")


if __name__ == "__main__":
    main()
