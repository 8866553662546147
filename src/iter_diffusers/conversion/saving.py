"""Converted pipelines on disk and on the Hub: an atomic folder with variants and a card, and the upload of a
pipeline folder's own files."""

from __future__ import annotations

from pathlib import Path

import torch

from ..pipelines.hub_code import HUB_MODULES
from .pipeline import convert_official_checkpoints
from .state_dicts import ConversionError

VARIANTS = {"float16": ("fp16", torch.float16), "bfloat16": ("bf16", torch.bfloat16)}


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, in hex."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_replaceable(output_dir: Path, overwrite: bool) -> None:
    """Refuse to write into ``output_dir`` unless it is new or empty, or (with ``overwrite``) holds a pipeline.

    ``overwrite`` never replaces a folder of other files, the current directory, one of its parents, the home
    directory or the file-system root, whatever it holds.
    """
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise ConversionError(f"{output_dir} exists and is not a folder")
    if not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise ConversionError(f"{output_dir} exists and is not empty (pass --overwrite to replace a pipeline folder)")
    resolved = output_dir.resolve()
    protected = {Path.cwd().resolve(), *Path.cwd().resolve().parents, Path.home().resolve()}
    if resolved in protected:
        raise ConversionError(f"{output_dir} is the current directory, one of its parents or the home folder: "
                              "--overwrite never replaces it; choose a new folder")
    if not (output_dir / "model_index.json").is_file():
        raise ConversionError(f"{output_dir} holds files but no pipeline (no model_index.json): --overwrite only "
                              "replaces a pipeline folder; choose a new or empty folder")


def convert_and_save(
    vqgan_checkpoint: str | Path,
    iter_checkpoint: str | Path,
    output_dir: str | Path,
    dtype: str = "float32",
    overwrite: bool = False,
    hub_model_id: str | None = None,
    release_url: str | None = None,
    sources: dict[str, str] | None = None,
) -> Path:
    """Convert the official files and write a complete pipeline folder with a model card, atomically.

    The folder always holds fp32 safetensors; ``dtype="float16"``/``"bfloat16"`` adds the ``fp16``/``bf16``
    variant (load it with ``variant="fp16", dtype=torch.float16``). The card records the SHA-256 of both files and
    ``release_url``, where they were downloaded from (None: local files); ``sources`` ({file name: SHA-256}) saves
    hashing the files again when the caller has. Nothing is left on disk if anything fails.
    """
    import shutil
    import tempfile

    from ..model_card import converted_model_card

    output_dir = Path(output_dir)
    if dtype != "float32" and dtype not in VARIANTS:
        raise ConversionError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    check_replaceable(output_dir, overwrite)
    pipe = convert_official_checkpoints(vqgan_checkpoint, iter_checkpoint)
    if sources is None:  # callers that hashed the files already pass their digests: no second read
        sources = {Path(p).name: sha256_file(p) for p in (vqgan_checkpoint, iter_checkpoint)}
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        if dtype in VARIANTS:
            variant, torch_dtype = VARIANTS[dtype]
            pipe.to(dtype=torch_dtype).save_pretrained(staging, safe_serialization=True, variant=variant)
            pipe.to(dtype=torch.float32)
        converted_model_card(pipe, sources, hub_model_id, release_url).save(staging / "README.md")
        staging.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def pipeline_files(folder: str | Path) -> list[str]:
    """The files of a pipeline folder, relative to it: ``model_index.json``, the code it carries, the folders of the
    components it names, and the card (``README.md``) with the images it shows. Training checkpoints, logs and other files are not."""
    import json

    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    components = [name for name, value in index.items() if isinstance(value, list) and (folder / name).is_dir()]
    files = [p for name in components for p in (folder / name).rglob("*") if p.is_file()]
    files.append(folder / "model_index.json")
    files += [folder / f"{module}.py" for module in HUB_MODULES if (folder / f"{module}.py").is_file()]
    if (folder / "README.md").is_file():
        card = (folder / "README.md").read_text(encoding="utf-8")
        files.append(folder / "README.md")
        files += [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and f"./{p.name})" in card]
    return sorted(p.relative_to(folder).as_posix() for p in files)


def push_folder_to_hub(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create (or reuse) a Hub model repo and upload the pipeline in ``folder`` to it; returns the repo URL.

    Only :func:`pipeline_files` are uploaded, so that a training folder's ``checkpoint-*``, logs and validation
    images stay local.
    """
    from huggingface_hub import create_repo, upload_folder

    url = create_repo(repo_id, private=private, exist_ok=True, token=token)
    upload_folder(repo_id=url.repo_id, folder_path=str(folder), token=token, commit_message="Add ITER pipeline",
                  allow_patterns=pipeline_files(folder))
    return str(url)
