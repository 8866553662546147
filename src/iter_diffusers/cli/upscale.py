"""``iter-sr``: super-resolve image files, folders and globs with an ITER pipeline.

Examples::

    # a folder of photos, x4, with the bundled demo model, outputs as <name>_x4.png
    iter-sr -i photos/ -o results/

    # the official x4 weights (downloaded and converted on first use), JPEG inputs kept as JPEG, tiles of 256 LQ
    # pixels, on the GPU in half precision
    iter-sr -i "scans/*.jpg" -o results/ --model official-x4 --ext auto --tile 256 --dtype float16

    # several GPUs: the file list is split across the processes (process i takes files i, i+n, i+2n, ...)
    accelerate launch --num_processes 4 -m iter_diffusers.cli.upscale -i photos/ -o results/

Entry point (console script): ``iter-sr = iter_diffusers.cli.upscale:main``.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import PIL.Image
import PIL.ImageOps

import iter_diffusers

PROG = "iter-sr"

#: The bundled demo model; ``--model`` overrides it.
DEFAULT_MODEL = iter_diffusers.DEMO_MODEL_PATH

#: File extensions taken from folders and globs (a file named explicitly is read whatever its extension).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEFAULT_SUFFIX = "_x{scale}"
DEFAULT_SEED = 123
DTYPES = ("float32", "float16", "bfloat16")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# What each output extension can hold. webp has no grayscale mode (grey is written as RGB).
_FORMATS = {
    "png": dict(pil="PNG", alpha=True, bits16=True, gray=True),
    "jpg": dict(pil="JPEG", alpha=False, bits16=False, gray=True),
    "jpeg": dict(pil="JPEG", alpha=False, bits16=False, gray=True),
    "webp": dict(pil="WEBP", alpha=True, bits16=False, gray=False),
    "tif": dict(pil="TIFF", alpha=True, bits16=True, gray=True),
    "tiff": dict(pil="TIFF", alpha=True, bits16=True, gray=True),
    "bmp": dict(pil="BMP", alpha=False, bits16=False, gray=True),
}
EXT_CHOICES = ("png", "jpg", "webp", "tiff", "auto")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as PIL's convert("L")

DESCRIPTION = """\
Super-resolve images with ITER (Chen et al., AAAI 2024).

Inputs (-i, repeatable): an image file (read whatever its extension), a folder (its image files, not recursive,
sorted by name, hidden files skipped) or a glob such as "shots/*.jpg" or "data/**/*.png" (quote it; matching
image files, sorted). Image extensions taken from folders and globs: %s.
Files are processed in the order given; a file given twice is processed once. Every -i must match something,
otherwise nothing is done (exit status 2).

Outputs: <output_dir>/<input name without extension><suffix>.<ext>, written atomically (a temporary file in the
output folder, then renamed), the folder being created if needed. An existing output is skipped with a message
unless --overwrite is given (a skip is not a failure). An output path that is an input file, or two inputs with
the same output path, is a usage error and nothing is processed. When the output folder is also an input folder
(or glob), files there whose name already ends with the suffix are taken to be earlier outputs and are ignored.
""" % ", ".join(IMAGE_EXTENSIONS)

EPILOG = """\
Image handling: the EXIF orientation is applied. Grayscale inputs (1, L, I;16, I) go through the model as RGB
and are saved as grayscale (the BT.601 luma of the result), except as webp, which has no grayscale mode. 16-bit
grayscale inputs (I;16, I) are read at full precision and saved as 16-bit when --ext is png or tiff (8-bit
otherwise, with a warning; Pillow reads 16-bit RGB files as 8-bit). Transparent inputs (RGBA, LA, palette or
grey/RGB with a transparent colour) go through the model as RGB; their alpha channel is upscaled separately
(PIL bicubic) and re-attached for png, webp and tiff; jpg and bmp cannot hold it, so it is dropped with a
warning. Palette images are saved as RGB(A), CMYK and other colour spaces as RGB. An embedded ICC profile is
copied when the output keeps the input's colour model.

Reproducibility: every image gets its own generator, torch.Generator("cpu").manual_seed(--seed), so a result does
not depend on the order of the inputs, on what else is processed in the run, or on the sharding.

Several processes: under `accelerate launch` with more than one process, process i of n processes files
i, i+n, i+2n, ... of the full input list on its own device (--device auto), and the main process prints the
summary of all processes.

Exit status: 0 when every image was written or skipped; 1 when an image failed (each failure is reported as one
line "iter-sr: error: <file>: <reason>" and the others go on; with several processes, the status of the
process's own share); 2 on a usage error (bad option, no input matched, model not found or of another scale,
output conflicts); 130 when interrupted.
"""


class UsageError(Exception):
    """Something wrong with the command line or the model: one line on stderr, exit status 2."""


class ImageError(Exception):
    """A problem with one image file: one line on stderr, the other files go on."""


def _one_line(text: object, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------- images
@dataclass
class LoadedImage:
    """An input image ready for the pipeline, with what is needed to save the result like it."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    alpha: Optional[PIL.Image.Image] = None  # mode "L", (W, H); None when the input has no transparency
    grayscale: bool = False
    bit_depth: int = 8  # 8 or 16
    icc_profile: Optional[bytes] = None

    @property
    def size(self) -> Tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def _gray_to_rgb(values: np.ndarray) -> np.ndarray:
    return np.repeat(values.astype(np.float32)[:, :, None], 3, axis=2)


def load_image(path: Path) -> LoadedImage:
    """Read an image file: EXIF orientation applied, RGB float in [0, 1] plus alpha, grey and bit-depth flags."""
    try:
        with PIL.Image.open(path) as opened:
            opened.load()
            icc = opened.info.get("icc_profile")
            image = PIL.ImageOps.exif_transpose(opened)
    except PIL.UnidentifiedImageError:
        raise ImageError("not a readable image (unknown format or corrupt file)") from None
    except Exception as error:  # truncated files, broken chunks, decompression bombs, bad EXIF, ...
        raise ImageError(f"cannot read the image: {_one_line(error) or type(error).__name__}") from None

    mode = image.mode
    if image.width == 0 or image.height == 0:
        raise ImageError(f"empty image ({image.width}x{image.height})")
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image).astype(np.float32)
        return LoadedImage(_gray_to_rgb(np.clip(values, 0, 65535) / 65535.0), None, True, 16, icc)
    if mode in ("F", "I;32", "I;32L", "I;32B"):
        raise ImageError(f"unsupported image mode {mode} (32-bit); convert it to 8- or 16-bit first")

    transparent = "transparency" in image.info
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA" if (mode == "PA" or transparent) else "RGB")
    elif mode in ("1", "L") and transparent:
        image = image.convert("LA")
    elif mode == "RGB" and transparent:
        image = image.convert("RGBA")

    mode = image.mode
    if mode in ("1", "L", "LA", "La"):
        grayscale = True
        alpha = image.convert("LA").getchannel("A") if mode in ("LA", "La") else None
        values = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
        rgb = _gray_to_rgb(values)
    else:
        grayscale = False
        alpha = image.convert("RGBA").getchannel("A") if mode in ("RGBA", "RGBa", "LA", "PA") else None
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        if mode not in ("RGB", "RGBA", "RGBa", "RGBX"):
            icc = None  # e.g. a CMYK profile no longer describes the RGB pixels
    return LoadedImage(np.ascontiguousarray(rgb), alpha, grayscale, 8, icc)


def compose_output(sr: np.ndarray, source: LoadedImage, ext: str, warn=None):
    """The result (sH, sW, 3) float in [0, 1] as a PIL image like ``source``, for extension ``ext``.

    Returns ``(image, pil_format, save_kwargs_without_quality)``.
    """
    warn = warn or (lambda message: None)
    caps = _FORMATS[ext]
    sr = np.clip(np.nan_to_num(sr.astype(np.float32), nan=0.0), 0.0, 1.0)
    if source.grayscale and caps["gray"]:
        luma = np.clip(sr @ _LUMA, 0.0, 1.0)
        if source.bit_depth == 16 and caps["bits16"]:
            image = PIL.Image.fromarray(np.round(luma * 65535.0).astype(np.uint16))  # mode I;16
        else:
            image = PIL.Image.fromarray(np.round(luma * 255.0).astype(np.uint8), mode="L")
    else:
        image = PIL.Image.fromarray(np.round(sr * 255.0).astype(np.uint8), mode="RGB")
    if source.bit_depth == 16 and not caps["bits16"]:
        warn(f"saved with 8 bits per channel ({ext} cannot hold 16-bit images; use --ext png to keep them)")

    if source.alpha is not None:
        if caps["alpha"]:
            alpha = source.alpha.resize(image.size, PIL.Image.Resampling.BICUBIC)
            if image.mode == "L":
                image = PIL.Image.merge("LA", (image, alpha))
            else:
                image = PIL.Image.merge("RGBA", (*image.split(), alpha))
        else:
            warn(f"transparency dropped ({ext} has no alpha channel; use --ext png or webp to keep it)")

    kwargs = {}
    output_gray = image.mode in ("L", "LA", "I;16")
    if source.icc_profile and output_gray == source.grayscale:
        kwargs["icc_profile"] = source.icc_profile
    return image, caps["pil"], kwargs


def atomic_save(image: PIL.Image.Image, path: Path, pil_format: str, **save_kwargs) -> None:
    """Write ``image`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    created = False
    try:
        with open(temporary, "xb") as handle:  # "x": never clobbers anything; permissions follow the umask
            created = True
            image.save(handle, format=pil_format, **save_kwargs)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if created:
            try:
                temporary.unlink()
            except OSError:
                pass
        raise


# ---------------------------------------------------------------------------------------------------- inputs
@dataclass
class InputFile:
    path: Path
    explicit: bool  # named directly (True) or found in a folder / by a glob (False)


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def collect_inputs(patterns: Sequence[str]) -> List[InputFile]:
    """Expand the -i values (files, folders, globs) into a list of files, in order, without duplicates."""
    found: List[InputFile] = []
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
    return own if own in _FORMATS else "png"


def plan_jobs(inputs: Sequence[InputFile], output_dir: Path, suffix: str, ext: str, info=None) -> List[Job]:
    """Output path of every input; refuses outputs that are inputs and outputs shared by two inputs."""
    info = info or (lambda message: None)
    out_real = output_dir.resolve()
    jobs: List[Job] = []
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


# ---------------------------------------------------------------------------------------------------- arguments
def parse_tile(value: str):
    """``auto`` -> "auto"; ``0`` / ``none`` -> None (never tile); a positive int -> that LQ tile size."""
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    if text in ("0", "none", "off"):
        return None
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, 'auto' or 0/'none', got {value!r}") from None
    if size < 0:
        raise argparse.ArgumentTypeError(f"the tile size must not be negative, got {size}")
    return size or None


def _int_at_least(minimum: int):
    """An argparse type: an integer ≥ ``minimum``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {number}")
        return number

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _unit_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {number}")
    return number


def _quality(value: str) -> int:
    number = _positive_int(value)
    if number > 100:
        raise argparse.ArgumentTypeError(f"must be in [1, 100], got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument("-i", "--input", action="append", required=True, metavar="PATH",
                    help="an image file, a folder of images or a glob; repeat for more")
    io.add_argument("-o", "--output_dir", required=True, type=Path, help="folder for the results (created)")
    io.add_argument("--suffix", default=DEFAULT_SUFFIX,
                    help="added to each output name; {scale} is replaced by the model's scale (default: %(default)s)")
    io.add_argument("--ext", default="png", choices=EXT_CHOICES,
                    help="output format; auto = that of the input (png for formats it cannot write) "
                         "(default: %(default)s)")
    io.add_argument("--quality", type=_quality, default=95, help="jpg / webp quality (default: %(default)s)")
    io.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    io.add_argument("-q", "--quiet", action="store_true",
                    help="no progress bar, per-file lines or summary; warnings and errors are still printed")

    model = parser.add_argument_group("model and sampling")
    model.add_argument("--model", default=None,
                       help="official-x4 or official-x2 (the official weights, downloaded from ITER_RELEASE_URL "
                            "and converted on first use, then cached), a local ITER_x4.pth / ITER_x2.pth with "
                            "ITER_swinvqgan.pth next to it, a converted pipeline folder or a Hugging Face Hub id "
                            "(default: the bundled demo model, iter_diffusers/pretrained/iter-demo-x4)")
    model.add_argument("--scale", type=int, default=None,
                       help="expected upscale factor; an error unless it is the model's (optional check)")
    model.add_argument("--steps", type=_positive_int, default=8, help="refinement steps T (default: %(default)s)")
    model.add_argument("--alpha", type=_unit_float, default=None,
                       help="mask threshold alpha of the token evaluator (default: the model's, 0.7 officially)")
    model.add_argument("--color_fix", default=None, choices=("wavelet", "adain", "none"),
                       help="colour / low-frequency correction from the input (default: the model's; the bundled "
                            "model uses wavelet, converted official weights none)")
    model.add_argument("--seed", type=int, default=DEFAULT_SEED,
                       help="random seed, the same for every image (default: %(default)s)")

    compute = parser.add_argument_group("computation")
    compute.add_argument("--tile", type=parse_tile, default="auto", metavar="{auto,0,N}",
                         help="LQ tile size: N pixels, auto (256-pixel tiles for inputs of at least 720x720 "
                              "pixels, as the official script) or 0/none to never tile (default: auto)")
    compute.add_argument("--tile_padding", type=_non_negative_int, default=16,
                         help="LQ pixels of context around each tile (default: %(default)s)")
    compute.add_argument("--dtype", default="float32", choices=DTYPES, help="weights' dtype (default: %(default)s)")
    compute.add_argument("--device", default="auto",
                         help="torch device; auto = cuda if available, else cpu (under accelerate launch: each "
                              "process's own device) (default: %(default)s)")
    return parser


# ---------------------------------------------------------------------------------------------------- console
class Console:
    """Messages that do not break the progress bar; errors and warnings on stderr."""

    def __init__(self, quiet: bool, show_info: bool = True):
        self.quiet = quiet
        self.show_info = show_info and not quiet

    @staticmethod
    def _write(message: str, stream) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=stream)

    def info(self, message: str) -> None:
        if self.show_info:
            self._write(message, sys.stdout)

    def warning(self, message: str) -> None:
        self._write(f"{PROG}: warning: {message}", sys.stderr)

    def error(self, message: str) -> None:
        self._write(f"{PROG}: error: {_one_line(message, limit=2000)}", sys.stderr)


# ---------------------------------------------------------------------------------------------------- processes
@dataclass
class Processes:
    index: int = 0
    count: int = 1
    state: object = None  # accelerate.PartialState when several processes run

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def gather(self, value) -> list:
        """``value`` of every process, in process order (a collective: every process must call it)."""
        if self.count == 1:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])


def _has_accelerator() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


def detect_processes(device: str = "auto") -> Processes:
    """Several processes only under a launcher that sets WORLD_SIZE > 1 (accelerate launch, torchrun)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        world = 1
    if world <= 1:
        return Processes()
    try:
        from accelerate import PartialState
    except ImportError:
        raise UsageError("running as several processes needs accelerate (pip install accelerate)") from None
    # Without cpu=True, accelerate sets up CPU-only processes as independent single processes.
    state = PartialState(cpu=device == "cpu" or not _has_accelerator())
    return Processes(state.process_index, state.num_processes, state)


# ---------------------------------------------------------------------------------------------------- model
def resolve_device(name: str, processes: Processes):
    import torch

    if name == "auto":
        if processes.state is not None:
            return processes.state.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as error:
        raise UsageError(f"--device {name}: {_one_line(error)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name}: MPS is not available")
    return device


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not text.startswith((".", "~"))
        and all(c.isalnum() or c in "-_." for part in parts for c in part)
    )


def load_pipeline(model: Optional[str], dtype_name: str, device, quiet: bool):
    """Load the ITERPipeline once: a local folder or a Hub id; every failure is a UsageError."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    from iter_diffusers import ITERPipeline
    from iter_diffusers.official import OfficialWeightsError, is_official_name_or_file, official_pipeline_path

    if model is not None and is_official_name_or_file(model):
        try:
            model = str(official_pipeline_path(model, progress=not quiet))
        except (OfficialWeightsError, OSError) as error:
            raise UsageError(f"--model {model}: {_one_line(error)}") from None
    if model is None:
        if not DEFAULT_MODEL.is_dir():
            raise UsageError(
                f"the bundled demo model is not installed (expected at {DEFAULT_MODEL}); pass --model with a "
                "converted pipeline folder (see scripts/convert_weights.py) or a Hugging Face Hub id"
            )
        source = str(DEFAULT_MODEL)
    else:
        expanded = os.path.expanduser(model)
        if Path(expanded).exists():
            if not Path(expanded).is_dir():
                raise UsageError(f"--model {model}: not a folder (expected a converted pipeline folder)")
            if not (Path(expanded) / "model_index.json").is_file():
                raise UsageError(f"--model {model}: not a diffusers pipeline folder (no model_index.json)")
            source = expanded
        elif _looks_like_hub_id(model):
            source = model
        else:
            raise UsageError(f"--model {model}: no such folder (nor a Hugging Face Hub id of the form owner/name)")

    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype_name]
    bar_was_enabled = diffusers_logging.is_progress_bar_enabled()
    if quiet or not sys.stderr.isatty():
        diffusers_logging.disable_progress_bar()
    try:
        pipe = ITERPipeline.from_pretrained(source, dtype=dtype)
    except Exception as error:
        where = "the folder" if Path(source).exists() else "the Hugging Face Hub"
        raise UsageError(f"cannot load the model {model or source} from {where}: {_one_line(error)}") from None
    finally:
        if bar_was_enabled:
            diffusers_logging.enable_progress_bar()
    if not isinstance(pipe, ITERPipeline):
        raise UsageError(f"--model {model}: a {type(pipe).__name__}, not an ITERPipeline")
    try:
        pipe = pipe.to(device)
    except Exception as error:
        raise UsageError(f"cannot move the model to {device}: {_one_line(error)}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------------------------------------------- main
@dataclass
class Counts:
    written: int = 0
    skipped: int = 0
    failed: int = 0


def upscale_file(pipe, job: Job, args, console: Console) -> str:
    """Process one job; returns "written" or "skipped"; raises ImageError (or anything else) on failure."""
    import torch

    source = load_image(job.input)
    width, height = source.size
    started = time.perf_counter()
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    try:
        result = pipe(
            source.rgb,
            num_inference_steps=args.steps,
            mask_threshold=args.alpha,
            color_fix=args.color_fix,
            generator=generator,
            tile_size=args.tile,
            tile_padding=args.tile_padding,
            output_type="np",
        ).images[0]
    except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError) as error:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise ImageError(f"out of memory ({_one_line(error, 200)}); try a smaller --tile, e.g. --tile 128") from None

    ext = job.output.suffix.lstrip(".")
    warnings = []
    image, pil_format, save_kwargs = compose_output(result, source, ext, warnings.append)
    for message in warnings:
        console.warning(f"{job.input}: {message}")
    if pil_format in ("JPEG", "WEBP"):
        save_kwargs["quality"] = args.quality
    if pil_format == "JPEG":
        save_kwargs["subsampling"] = 0  # 4:4:4: chroma at full resolution
    try:
        atomic_save(image, job.output, pil_format, **save_kwargs)
    except OSError as error:
        raise ImageError(f"cannot write {job.output}: {_one_line(error)}") from None
    seconds = time.perf_counter() - started
    console.info(f"{job.input} -> {job.output} ({width}x{height} -> {image.width}x{image.height}, {seconds:.1f}s)")
    return "written"


def _setup(args, console: Console, processes: Processes):
    inputs = collect_inputs(args.input)
    if not inputs:
        raise UsageError("no input images")
    device = resolve_device(args.device, processes)
    if device.type == "cpu" and args.dtype == "float16":
        console.warning("float16 on the CPU is slow and not supported by every operation; consider float32")
    if processes.state is not None:
        with processes.state.main_process_first():  # one download when the model comes from the Hub
            pipe = load_pipeline(args.model, args.dtype, device, args.quiet or not processes.is_main)
    else:
        pipe = load_pipeline(args.model, args.dtype, device, args.quiet)
    scale = int(pipe.upscale_factor)
    if args.scale is not None and args.scale != scale:
        raise UsageError(f"--scale {args.scale} does not match the model, which upscales x{scale}")
    suffix = args.suffix.replace("{scale}", str(scale))
    if "/" in suffix or os.sep in suffix:
        raise UsageError(f"--suffix {args.suffix!r} must not contain a path separator")
    output_dir = Path(os.path.expanduser(str(args.output_dir)))
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output_dir {args.output_dir}: exists and is not a folder")
    jobs = plan_jobs(inputs, output_dir, suffix, args.ext, console.info if processes.is_main else None)
    if not jobs:
        raise UsageError("no input images left (all of them look like earlier outputs)")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create --output_dir {args.output_dir}: {_one_line(error)}") from None
    return pipe, jobs, output_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) and argparse's usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else (EXIT_OK if exit_.code is None else EXIT_USAGE)

    console = Console(args.quiet)
    try:
        processes = detect_processes(args.device)
    except UsageError as error:
        console.error(str(error))
        return EXIT_USAGE
    except Exception as error:
        console.error(f"cannot start the processes: {_one_line(error)}")
        return EXIT_USAGE

    # Setup errors are gathered from every process before anyone gives up, so that no process is left waiting
    # on another; the main process reports them (once each).
    problem = None
    try:
        pipe, jobs, output_dir = _setup(args, console, processes)
    except UsageError as error:
        problem = str(error)
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_INTERRUPTED
    problems = processes.gather(problem)
    if any(p is not None for p in problems):
        if processes.is_main:
            for index, message in enumerate(problems):
                if message is not None and message not in problems[:index]:
                    only_some = processes.count > 1 and problems.count(message) < len(problems)
                    console.error((f"process {index}: " if only_some else "") + message)
        return EXIT_USAGE

    mine = shard(jobs, processes.index, processes.count)
    counts = Counts()
    from tqdm import tqdm

    show_bar = not args.quiet and sys.stderr.isatty() and processes.is_main
    try:
        with tqdm(total=len(mine), unit="img", desc=PROG, disable=not show_bar, file=sys.stderr) as bar:
            for job in mine:
                try:
                    if job.output.exists() and not args.overwrite:
                        console.info(f"skipping {job.input}: {job.output} exists (use --overwrite to replace it)")
                        counts.skipped += 1
                    else:
                        upscale_file(pipe, job, args, console)
                        counts.written += 1
                except ImageError as error:
                    counts.failed += 1
                    console.error(f"{job.input}: {error}")
                except Exception as error:  # anything else about this one file: report it and go on
                    counts.failed += 1
                    console.error(f"{job.input}: {type(error).__name__}: {_one_line(error)}")
                bar.update()
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_INTERRUPTED

    totals = processes.gather((counts.written, counts.skipped, counts.failed))
    if processes.is_main and not args.quiet:
        written, skipped, failed = (sum(t[i] for t in totals) for i in range(3))
        where = f" in {processes.count} processes" if processes.count > 1 else ""
        print(f"{PROG}: {written} written, {skipped} skipped (existing), {failed} failed{where}; "
              f"outputs in {output_dir}", file=sys.stdout)
    return EXIT_FAILED if counts.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
