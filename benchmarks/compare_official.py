#!/usr/bin/env python
"""Run the official ITER code and ITERPipeline side by side: same full-size random weights, same input, same seed.

    pip install einops
    git clone https://github.com/chaofengc/ITER /path/to/ITER
    python benchmarks/compare_official.py --official_repo /path/to/ITER --size 128

Only the official architecture files are imported (their basicsr/timm/turtle imports are satisfied by small
stand-ins created here); nothing of the official code is part of this repository. Prints both timings, their
ratio and the largest pixel difference of the outputs.
"""

import argparse
import importlib
import resource
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from iter_diffusers.conversion import convert_official_checkpoints

OFFICIAL_OPTS = {
    "scale_factor": 4, "LQ_stage": True, "codebook_params": [[32, 1024, 512]],
    "vqgan_opt": {"ckpt_path": None, "n_embed": 512, "embed_dim": 128,
                  "ddconfig": {"in_channels": 3, "emb_dim": 128, "resolution": [256, 256], "nf": 128, "swin_dim": 256,
                               "swin_window": 8, "swin_blk_depth": 6, "swin_blk_num": 1, "ch_mult": [1, 2, 2, 4]}},
}


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def import_official_iter(repo: Path):
    """The official ``ITER`` class, importing only ``basicsr/archs`` of the checkout."""

    class Registry:
        def register(self):
            return lambda cls: cls

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    _module("turtle", forward=None)  # iter_utils.py imports it by accident
    _module("timm")
    _module("timm.models")
    _module("timm.models.layers", DropPath=lambda *a, **k: torch.nn.Identity(), to_2tuple=to_2tuple,
            trunc_normal_=torch.nn.init.trunc_normal_)
    _module("basicsr", __path__=[str(repo / "basicsr")])
    _module("basicsr.utils", __path__=[])
    _module("basicsr.utils.registry", ARCH_REGISTRY=Registry())
    _module("basicsr.archs", __path__=[str(repo / "basicsr" / "archs")])
    return importlib.import_module("basicsr.archs.iter_arch").ITER


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official_repo", required=True, type=Path)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ITER = import_official_iter(args.official_repo.resolve())
    torch.manual_seed(0)
    official = ITER(**OFFICIAL_OPTS).eval()
    official.set_sample_params(8, 1.0, 1.0, 0.7, "linear")
    state = official.state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"params": {k[6:]: v for k, v in state.items() if k.startswith("vqgan.")}}, f"{tmp}/vq.pth")
        torch.save({"params": state}, f"{tmp}/x4.pth")
        pipe = convert_official_checkpoints(f"{tmp}/vq.pth", f"{tmp}/x4.pth")
    pipe.set_progress_bar_config(disable=True)
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    times = {"official": [], "ours": []}
    for _ in range(args.runs):
        torch.manual_seed(123)
        start = time.perf_counter()
        with torch.no_grad():
            reference, _ = official.test(x)
        times["official"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ours = pipe(x, generator=torch.Generator().manual_seed(123), output_type="pt", tile_size=None).images
        times["ours"].append(time.perf_counter() - start)
    print(f"x4, {args.size}² -> {4 * args.size}², fp32, {args.threads} threads, full-size random weights")
    for name, values in times.items():
        print(f"{name:9s} runs (s): {', '.join(f'{v:.1f}' for v in values)}")
    print(f"speed-up (official / ours, best runs): {min(times['official']) / min(times['ours']):.2f}x")
    print(f"max |official - ours|: {(reference - ours).abs().max().item():.2e}")
    print(f"peak RSS of this process (both models): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
