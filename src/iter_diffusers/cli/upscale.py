"""``iter-sr``: super-resolve image files, folders and globs with an ITER pipeline.

Examples::

    # a folder of photos, x4, with the bundled demo model, outputs as <name>_x4.png
    iter-sr -i photos/ -o results/

    # the official x4 weights (downloaded and converted on first use), JPEG inputs kept as JPEG, tiles of 256 LQ
    # pixels, computed exactly as the official code does (fp32; the default --dtype auto picks the fastest mode)
    iter-sr -i "scans/*.jpg" -o results/ --model official-x4 --ext auto --tile 256 --dtype float32

    # several GPUs: the file list is split across the processes (process i takes files i, i+n, i+2n, ...)
    accelerate launch --num_processes 4 -m iter_diffusers.cli.upscale -i photos/ -o results/

Entry point (console script): ``iter-sr = iter_diffusers.cli.upscale:main``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import iter_diffusers

# torch, diffusers and the pipeline are imported where the work starts, so that --help and usage errors answer at
# once (they take seconds to import)
from .arguments import build_parser
from .console import PROG, Console, ImageError, UsageError, one_line
from .images import LoadedImage, atomic_save, compose_output, load_image  # noqa: F401  (LoadedImage: app/ui.py)
from .inputs import Job, collect_inputs, plan_jobs, shard

#: The bundled demo model; ``--model`` overrides it.
DEFAULT_MODEL = iter_diffusers.DEMO_MODEL_PATH

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


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
    from ..utils.devices import has_accelerator

    # Without cpu=True, accelerate sets up CPU-only processes as independent single processes.
    state = PartialState(cpu=device == "cpu" or not has_accelerator())
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
        raise UsageError(f"--device {name}: {one_line(error)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name}: MPS is not available")
    return device


MODEL_CHOICES = ("--model takes a converted pipeline folder, ITER_x4.pth or ITER_x2.pth (with ITER_swinvqgan.pth "
                 "next to it), official-x4, official-x2 or a Hugging Face Hub id (owner/name)")


def _looks_like_hub_id(text: str) -> bool:
    """An ``owner/name`` id that huggingface_hub accepts (a bare name would hide a mistyped local folder)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return text.count("/") == 1


def _looks_like_path(text: str) -> bool:
    """Meant as a local path: absolute, relative to . / .. / ~, nested, or a file name with an extension (letters
    first, as .json or .safetensors; Hub names such as Qwen2.5-7B have none)."""
    if text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text:
        return True
    return re.fullmatch(r"\.[A-Za-z][A-Za-z0-9]{0,15}", Path(text).suffix) is not None


def resolve_model(model: str | None, quiet: bool) -> str:
    """What ``ITERPipeline.from_pretrained`` gets for ``--model``: a folder or a Hub id; a UsageError otherwise."""
    from iter_diffusers.official import OfficialWeightsError, is_official_name_or_file, official_pipeline_path

    if model is None:
        if not DEFAULT_MODEL.is_dir():
            raise UsageError(
                f"the bundled demo model is not installed (expected at {DEFAULT_MODEL}); pass --model with a "
                "converted pipeline folder (see scripts/convert_weights.py) or a Hugging Face Hub id"
            )
        return str(DEFAULT_MODEL)
    if is_official_name_or_file(model):
        try:
            return str(official_pipeline_path(model, progress=not quiet))
        except (OfficialWeightsError, OSError) as error:
            raise UsageError(f"--model {model}: {error}") from None  # ours: one line, not to be cut short
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UsageError(f"--model {model}: not a diffusers pipeline folder (no model_index.json); {MODEL_CHOICES}")
        return str(path)
    if path.exists():
        raise UsageError(f"--model {model}: a file, not a model; {MODEL_CHOICES}")
    if _looks_like_path(model) or not _looks_like_hub_id(model):
        raise UsageError(f"--model {model}: no such file or folder; {MODEL_CHOICES}")
    return model


def load_pipeline(model: str | None, dtype_name: str, device, quiet: bool):
    """Load the ITERPipeline once: a local folder or a Hub id; every failure is a UsageError."""
    import torch
    from diffusers.utils import logging as diffusers_logging

    from iter_diffusers import ITERPipeline

    source = resolve_model(model, quiet)
    # auto: loaded in fp32, then put in the device's fast mode by optimize_pipeline
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(dtype_name, torch.float32)
    bar_was_enabled = diffusers_logging.is_progress_bar_enabled()
    if quiet or not sys.stderr.isatty():
        diffusers_logging.disable_progress_bar()
    try:
        pipe = ITERPipeline.from_pretrained(source, dtype=dtype)
    except Exception as error:
        where = "the folder" if Path(source).exists() else "the Hugging Face Hub"
        raise UsageError(f"cannot load the model {model or source} from {where}: {one_line(error)}") from None
    finally:
        if bar_was_enabled:
            diffusers_logging.enable_progress_bar()
    if not isinstance(pipe, ITERPipeline):
        raise UsageError(f"--model {model}: a {type(pipe).__name__}, not an ITERPipeline")
    try:
        pipe = pipe.to(device)
    except Exception as error:
        raise UsageError(f"cannot move the model to {device}: {one_line(error)}") from None
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

    source = load_image(job.input, args.max_pixels, warn=lambda message: console.warning(f"{job.input}: {message}"))
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
        raise ImageError(f"out of memory ({one_line(error, 200)}); try a smaller --tile, e.g. --tile 128") from None

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
        raise ImageError(f"cannot write {job.output}: {one_line(error)}") from None
    seconds = time.perf_counter() - started
    console.info(f"{job.input} -> {job.output} ({width}x{height} -> {image.width}x{image.height}, {seconds:.1f}s)")
    return "written"


def _setup(args, console: Console, processes: Processes):
    import torch

    from ..pipelines.acceleration import optimize_pipeline, slow_dtype_message

    inputs = collect_inputs(args.input)
    if not inputs:
        raise UsageError("no input images")
    device = resolve_device(args.device, processes)
    if args.dtype not in ("auto", "int8"):
        message = slow_dtype_message(getattr(torch, args.dtype), device)
        if message:
            console.warning(message)
    if processes.state is not None:
        with processes.state.main_process_first():  # one download when the model comes from the Hub
            pipe = load_pipeline(args.model, args.dtype, device, args.quiet or not processes.is_main)
    else:
        pipe = load_pipeline(args.model, args.dtype, device, args.quiet)
    if args.dtype in ("auto", "int8") or args.compile or args.engine == "openvino":
        try:
            mode = optimize_pipeline(pipe, args.dtype, args.compile, engine=args.engine,
                                     notify=console.info if processes.is_main else None)
        except (ImportError, ValueError) as error:
            raise UsageError(f"--dtype {args.dtype} --engine {args.engine}: {one_line(error)}") from None
        if processes.is_main:
            console.info(f"computing in {mode.name}{' (compiled)' if args.compile else ''}: {mode.reason}")
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
        raise UsageError(f"cannot create --output_dir {args.output_dir}: {one_line(error)}") from None
    return pipe, jobs, output_dir


def main(argv: Sequence[str] | None = None) -> int:
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
        console.error(f"cannot start the processes: {one_line(error)}")
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
                    console.error(f"{job.input}: {type(error).__name__}: {one_line(error)}")
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
