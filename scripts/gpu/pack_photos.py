"""Copy an image folder as lossless WebP, for a device machine whose transfer is capped (64 MiB with the repo).

The demo photos are PNGs; lossless WebP holds the same pixels in about three quarters of the bytes. Every copy is
decoded again and compared with its source before it counts, and ``metadata.jsonl`` (an ``imagefolder``'s
captions and licences) is rewritten to name the new files. Files other than images and the metadata are skipped.

    python scripts/gpu/pack_photos.py data_cache/demo_dataset_512/train .gpu/data/train
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from iter_diffusers.evaluation.sr_benchmark import list_images


def _write_copies(source: Path, staging: Path) -> None:
    renamed = {}
    for path in list_images(source):
        target = staging / (path.stem + ".webp")
        if target.exists():  # a.png and a.jpg
            raise SystemExit(f"error: {source}: two images are named {path.stem!r}; their copies would be one file")
        with Image.open(path) as image:
            image.load()
            image.save(target, "WEBP", lossless=True, quality=100, method=6)
            # compared as colours: WebP keeps grey and palette images as RGB(A)
            mode = "RGBA" if image.has_transparency_data else "RGB"
            with Image.open(target) as copy:
                if not np.array_equal(np.asarray(copy.convert(mode)), np.asarray(image.convert(mode))):
                    raise SystemExit(f"error: {path}: its lossless WebP copy does not decode to the same pixels")
        renamed[path.name] = target.name
    metadata = source / "metadata.jsonl"
    if metadata.is_file():
        entries = [json.loads(line) for line in metadata.read_text().splitlines() if line.strip()]
        for entry in entries:
            if entry.get("file_name") not in renamed:
                raise SystemExit(f"error: {metadata}: {entry.get('file_name')!r} is not an image of {source}")
            entry["file_name"] = renamed[entry["file_name"]]
        (staging / "metadata.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))


def pack(source: Path, destination: Path) -> int:
    """Write ``source``'s images into ``destination`` (replaced whole, never left half-written); returns bytes."""
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}-"))
    try:
        _write_copies(source, staging)
    except BaseException:
        shutil.rmtree(staging)
        raise
    shutil.rmtree(destination, ignore_errors=True)
    staging.chmod(0o755)  # mkdtemp makes it private
    staging.rename(destination)
    return sum(p.stat().st_size for p in destination.iterdir())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    args = parser.parse_args()
    args.destination.parent.mkdir(parents=True, exist_ok=True)
    size = pack(args.source, args.destination)
    print(f"{args.destination}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
