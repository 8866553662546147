"""``iter-sr``'s inputs and outputs: -i values expanded into files, the output path of each, and the share of each
process."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .console import UsageError
from .images import FORMATS

#: File extensions taken from folders and globs (a file named explicitly is read whatever its extension).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class InputFile:
    path: Path
    explicit: bool  # named directly (True) or found in a folder / by a glob (False)


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def collect_inputs(patterns: Sequence[str]) -> list[InputFile]:
    """Expand the -i values (files, folders, globs) into a list of files, in order, without duplicates."""
    found: list[InputFile] = []
    seen = set()
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        path = Path(expanded)
        if path.is_dir():
            matches = [InputFile(p, False) for p in sorted(path.iterdir()) if p.is_file() and _is_image_name(p)]
            if not matches:
                raise UsageError(f"-i {pattern}: the folder holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        elif path.is_file():
            matches = [InputFile(path, True)]
        elif any(char in expanded for char in "*?["):
            names = sorted(glob.glob(expanded, recursive=True))
            matches = [InputFile(Path(n), False) for n in names if Path(n).is_file() and _is_image_name(Path(n))]
            if not matches:
                raise UsageError(f"-i {pattern}: no image files match")
        elif path.exists():
            raise UsageError(f"-i {pattern}: not a regular file or folder")
        else:
            raise UsageError(f"-i {pattern}: no such file or folder")
        for item in matches:
            key = os.path.normcase(str(item.path.resolve()))
            if key not in seen:
                seen.add(key)
                found.append(item)
    return found


def shard(files: Sequence, index: int, count: int) -> list:
    """The share of process ``index`` of ``count``: items index, index + count, ... (order kept)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"bad shard {index} of {count}")
    return list(files[index::count])


@dataclass
class Job:
    input: Path
    output: Path


def output_extension(input_path: Path, ext: str) -> str:
    if ext != "auto":
        return ext
    own = input_path.suffix.lower().lstrip(".")
    return own if own in FORMATS else "png"


def plan_jobs(inputs: Sequence[InputFile], output_dir: Path, suffix: str, ext: str, info=None) -> list[Job]:
    """Output path of every input; refuses outputs that are inputs and outputs shared by two inputs."""
    info = info or (lambda message: None)
    out_real = output_dir.resolve()
    jobs: list[Job] = []
    for item in inputs:
        if suffix and not item.explicit and item.path.parent.resolve() == out_real and item.path.stem.endswith(suffix):
            info(f"ignoring {item.path}: in the output folder and named like an output (suffix {suffix!r})")
            continue
        out_ext = output_extension(item.path, ext)
        jobs.append(Job(item.path, output_dir / f"{item.path.stem}{suffix}.{out_ext}"))

    input_keys = {}
    for job in jobs:
        input_keys[os.path.normcase(str(job.input.resolve()))] = job.input
    input_inodes = {}
    for job in jobs:
        stat = job.input.stat()
        input_inodes[(stat.st_dev, stat.st_ino)] = job.input
    outputs = {}
    for job in jobs:
        key = os.path.normcase(str(job.output.resolve()))
        clash = input_keys.get(key)
        if clash is None and job.output.exists():
            stat = job.output.stat()
            clash = input_inodes.get((stat.st_dev, stat.st_ino))
        if clash is not None:
            raise UsageError(
                f"the output for {job.input} would overwrite the input file {clash}; "
                "choose another --output_dir, --suffix or --ext"
            )
        if key in outputs:
            raise UsageError(
                f"{outputs[key]} and {job.input} would both be written to {job.output}; "
                "use --ext auto or process them separately"
            )
        outputs[key] = job.input
    return jobs
