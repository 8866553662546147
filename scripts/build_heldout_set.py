#!/usr/bin/env python3
"""The held-out evaluation photos: twelve photographs of Debian's ``plasma-workspace-wallpapers`` (GPL-2+).

    python scripts/build_heldout_set.py --output_dir data_cache/heldout_plasma

This package is reserved for evaluation: nothing in this repository trains or tunes on it. Each photo (the
package's largest rendition) is resized so that its short side is --size pixels (Lanczos) and centre-cropped to
a --size square, then written as PNG with a ``metadata.jsonl`` (source, licence). The package's abstract and
rendered wallpapers are left out: only photographs, of several kinds (people-made objects, plants, water, sky).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from PIL import Image, ImageOps

from build_demo_dataset import DEFAULT_DOWNLOADS, Context, Entry, Source, SourceUnavailable, debian_package_fetcher

PACKAGE = "plasma-workspace-wallpapers"
LICENCE = "GPL-2.0-or-later (plasma-workspace-wallpapers, debian/copyright: KDE Visual Design Group)"
PHOTOS = {  # wallpaper name -> its largest rendition in the package
    "BytheWater": "2560x1600.jpg",
    "ColdRipple": "2560x1600.jpg",
    "ColorfulCups": "2560x1600.jpg",
    "DarkestHour": "2560x1600.jpg",
    "EveningGlow": "2560x1600.jpg",
    "FallenLeaf": "2560x1600.jpg",
    "Grey": "2560x1600.jpg",
    "Kite": "2560x1600.jpg",
    "OneStandsOut": "2560x1600.jpg",
    "Path": "2560x1600.jpg",
    "Volna": "5120x2880.jpg",
    "summer_1am": "2560x1600.jpg",
}


def square_crop(data: bytes, size: int) -> Image.Image:
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.LANCZOS)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512, help="side of the square crops (default: 512)")
    parser.add_argument("--download_dir", type=Path, default=DEFAULT_DOWNLOADS)
    args = parser.parse_args(argv)

    entries = tuple(
        Entry(f"usr/share/wallpapers/{name}/contents/images/{file}", name, "heldout", LICENCE, "KDE Visual Design Group")
        for name, file in PHOTOS.items()
    )
    source = Source(PACKAGE, PACKAGE, entries, debian_package_fetcher(PACKAGE))
    try:
        files, origin = source.fetch(source, Context(download_dir=args.download_dir, log=print))
    except SourceUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with open(args.output_dir / "metadata.jsonl", "w", encoding="utf-8") as metadata:
        for entry in entries:
            file_name = f"plasma_{entry.name}.png"
            square_crop(files[entry.member], args.size).save(args.output_dir / file_name)
            metadata.write(json.dumps({"file_name": file_name, "licence": entry.licence,
                                       "attribution": entry.attribution, "origin": f"{origin}:{entry.member}"}) + "\n")
    print(f"{len(entries)} held-out photos in {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
