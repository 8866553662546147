"""``iter-sr``'s command line: the options, their checks and the help text."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import PIL.Image

from .. import DEMO_MODEL_PATH
from ..pipelines import checks
from ..pipelines.options import COLOR_FIXES, ENGINES
from .console import PROG
from .images import EXT_CHOICES
from .inputs import IMAGE_EXTENSIONS

DEFAULT_SUFFIX = "_x{scale}"
DEFAULT_SEED = 123
DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")

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


def _number(text: str) -> int | float:
    """``text`` as an int, else a float (which the checks refuse where an int is needed, naming it)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _valid_call(**changes) -> None:
    """``check_call_arguments`` on a valid call with ``changes``: the API's own words for the CLI's options that
    have no check function of their own (steps, tile size and padding)."""
    call = dict(num_inference_steps=1, output_type="np", tile_size=None, tile_padding=0, latents=None,
                tensor_inputs=None, num_images_per_prompt=1, callback_on_step_end=None, mask_threshold=None,
                token_temperature=None, mask_temperature=None, tile_batch_size=1, callback_tensor_inputs=[])
    checks.check_call_arguments(**{**call, **changes})


def _api_checked(convert, check):
    """An argparse type: ``convert`` the text, then refuse it with the message of the pipeline's ``check``, so
    that ``iter-sr`` and ``pipe(...)`` say the same."""

    def parse(text: str):
        value = convert(text)
        try:
            check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return value

    return parse


_steps = _api_checked(_number, lambda value: _valid_call(num_inference_steps=value))
_tile_padding = _api_checked(_number, lambda value: _valid_call(tile_padding=value))
_alpha = _api_checked(_number, lambda value: checks.check_mask_threshold(value))
_color_fix = _api_checked(str, lambda value: checks.check_color_fix(None if value == "none" else value, 1))
COLOR_FIX_CHOICES = (*COLOR_FIXES, "none")


def parse_tile(value: str):
    """``auto`` -> "auto"; ``0`` / ``none`` / ``off`` -> None (never tile); else a tile size the pipeline takes."""
    text = value.strip().lower()
    if text == "auto":
        return "auto"
    if text in ("0", "none", "off"):
        return None
    return _tile_size(text)


def _tile_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, 'auto' or 0/'none', got {text!r}") from None


_tile_size = _api_checked(_tile_number, lambda value: _valid_call(tile_size=value))


def _quality(value: str) -> int:
    number = _number(value)
    if not isinstance(number, int) or not 1 <= number <= 100:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, 100], got {value!r}")
    return number


def _max_pixels(value: str) -> int:
    number = _number(value)
    if not isinstance(number, int) or number < 0:
        raise argparse.ArgumentTypeError(f"must be a number of pixels (an integer, 0 for no limit), got {value!r}")
    return number



def bundled_defaults() -> dict:
    """The bundled model's stored sampling defaults, as ``--help`` states them (JSON reads: no torch import)."""
    try:
        index = json.loads((DEMO_MODEL_PATH / "model_index.json").read_text())
        scheduler = json.loads((DEMO_MODEL_PATH / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError):
        return {"steps": "?", "alpha": "?", "color_fix": "?"}
    return {"steps": index.get("num_inference_steps"), "alpha": scheduler.get("mask_threshold"),
            "color_fix": index.get("color_fix")}

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
    io.add_argument("--max_pixels", type=_max_pixels, default=PIL.Image.MAX_IMAGE_PIXELS,
                    help="largest input read, in pixels (width x height), checked before decoding, as a guard "
                         "against decompression bombs; 0 for no limit (default: %(default)s, Pillow's limit)")
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
    own = bundled_defaults()
    model.add_argument("--steps", type=_steps, default=None,
                       help=f"refinement steps T (default: the model's own: {own['steps']} for the bundled model, 8 "
                            "for the official weights)")
    model.add_argument("--alpha", type=_alpha, default=None,
                       help=f"mask threshold alpha of the token evaluator (default: the model's own: {own['alpha']} "
                            "for the bundled model, 0.7 for the official weights)")
    model.add_argument("--color_fix", default=None, type=_color_fix, metavar="{%s}" % ",".join(COLOR_FIX_CHOICES),
                       help=f"colour / low-frequency correction from the input (default: the model's own: "
                            f"{own['color_fix']} for the bundled model, none for converted official weights)")
    model.add_argument("--seed", type=int, default=DEFAULT_SEED,
                       help="random seed, the same for every image (default: %(default)s)")

    compute = parser.add_argument_group("computation")
    compute.add_argument("--tile", type=parse_tile, default="auto", metavar="{auto,0,N}",
                         help="LQ tile size: N pixels, auto (the fewest equal tiles whose run fits a 1 GiB memory "
                              "budget) or 0/none to never tile (default: auto)")
    compute.add_argument("--tile_padding", type=_tile_padding, default=16,
                         help="LQ pixels of context around each tile (default: %(default)s)")
    compute.add_argument("--dtype", default="auto", choices=DTYPES,
                         help="auto: the fastest mode measured for the device (bf16 on CPUs with avx512_bf16/AMX; "
                              "on other CPUs int8 when OpenVINO and NNCF are installed, else fp32 through "
                              "OpenVINO when it is, else fp32; bf16/fp16 on CUDA); int8: the networks on OpenVINO "
                              "with the decoder in int8, calibrated once per model (exact tokens, lossy rendering; "
                              "CPU); float32 is exact, as the official code (default: %(default)s)")
    compute.add_argument("--engine", default="auto", choices=ENGINES,
                         help="what runs the networks: openvino (fp32 on the CPU, exact, or --dtype int8; pip install "
                              "'iter-diffusers[openvino]'), torch, or auto: openvino where --dtype auto picks it "
                              "(default: %(default)s)")
    compute.add_argument("--compile", action="store_true",
                         help="torch.compile the networks: the first image of each size compiles for minutes, so "
                              "it pays off only for many images of one size")
    compute.add_argument("--device", default="auto",
                         help="torch device; auto = cuda if available, else cpu (under accelerate launch: each "
                              "process's own device) (default: %(default)s)")
    return parser
