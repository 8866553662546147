"""Fuzzing what people pass: the pipeline, iter-sr and the converter on random, odd and broken inputs.

Every case must end in a correct result or a clear error (ValueError / TypeError from the pipeline, a one-line
message and a non-zero exit code from the command-line tools), never another exception, a traceback, or a
half-written file. The cases are drawn from fixed seeds, so a failure reproduces.
"""

import importlib.util
import io
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from iter_diffusers.cli.upscale import main as iter_sr

S = 4
CONVERT = Path(__file__).parents[1] / "scripts" / "convert_weights.py"
PIL_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F")
NUMPY_DTYPES = (np.uint8, np.uint16, np.float32, np.float64, np.float16, np.int32, np.bool_)
TORCH_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64)
SPECIAL_VALUES = (None, np.nan, np.inf, -1.0, 2.0, 1e30)


def random_pipeline_input(rng: np.random.Generator):
    """One input of a random kind, size (1×1 up), layout, dtype and, sometimes, broken values."""
    height, width = (int(v) for v in rng.integers(1, 41, size=2))
    kind = rng.choice(["pil", "numpy", "torch"])
    if kind == "pil":
        mode = PIL_MODES[rng.integers(len(PIL_MODES))]
        return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    channels = [None, 1, 2, 3, 4, 5][rng.integers(6)]
    shape = (height, width) if channels is None else (height, width, channels)
    values = rng.random(shape)
    special = SPECIAL_VALUES[rng.integers(len(SPECIAL_VALUES))]
    if special is not None:
        values.flat[rng.integers(values.size)] = special
    if kind == "numpy":
        dtype = NUMPY_DTYPES[rng.integers(len(NUMPY_DTYPES))]
        array = (values * 255).astype(dtype) if np.issubdtype(dtype, np.integer) else values.astype(dtype)
        return array[None] if rng.random() < 0.2 else array
    dtype = TORCH_DTYPES[rng.integers(len(TORCH_DTYPES))]
    tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(values, -1, 0) if channels else values[None]))
    return tensor.to(dtype)


def expected_size(image) -> tuple[int, int]:
    if isinstance(image, PIL.Image.Image):
        return image.height, image.width
    if isinstance(image, np.ndarray):
        return image.shape[-3:-1] if image.ndim >= 3 and image.shape[-1] in (1, 2, 3, 4, 5) else image.shape[:2]
    return tuple(image.shape[-2:])


@pytest.mark.parametrize("seed", range(4))
def test_pipeline_on_random_inputs(pipe, seed):
    """15 random inputs per seed (60 in all): a correct s·H × s·W result in [0, 1], or ValueError / TypeError."""
    rng = np.random.default_rng(seed)
    outcomes = {"result": 0, "error": 0}
    for _ in range(15):
        image = random_pipeline_input(rng)
        try:
            out = pipe(image, num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np",
                       tile_size=None if rng.random() < 0.7 else 16).images
        except (ValueError, TypeError) as error:
            assert str(error) and "\n" not in str(error), repr(error)
            outcomes["error"] += 1
            continue
        height, width = expected_size(image)
        assert out.shape[1:] == (height * S, width * S, 3), (type(image), getattr(image, "shape", None), out.shape)
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        outcomes["result"] += 1
    assert outcomes["result"] and outcomes["error"], outcomes  # the draw reaches both outcomes


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tiff": "TIFF"}  # what iter-sr reads


def broken_file_bytes(rng: np.random.Generator, fmt: str) -> tuple[bytes, str]:
    """A small image in ``fmt``, intact, truncated, bit-flipped or emptied; returns (bytes, what was done)."""
    image = PIL.Image.fromarray(rng.integers(0, 256, (int(rng.integers(1, 24)), int(rng.integers(1, 24)), 3),
                                            dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    data = bytearray(buffer.getvalue())
    damage = rng.choice(["intact", "truncated", "flipped", "empty"])
    if damage == "truncated":
        data = data[: int(rng.integers(0, len(data)))]
    elif damage == "flipped":
        for index in rng.integers(0, len(data), size=8):
            data[index] ^= 1 << int(rng.integers(8))
    elif damage == "empty":
        data = bytearray()
    return bytes(data), damage


def test_iter_sr_on_broken_files(converted_dir, tmp_path, capsys):
    """40 files (8 per format): each is upscaled, or reported in one line with exit code 1; no partial output."""
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for ext, fmt in FORMATS.items():
        for index in range(8):
            data, damage = broken_file_bytes(rng, fmt)
            (inputs / f"{fmt.lower()}_{index}_{damage}{ext}").write_bytes(data)
    out = tmp_path / "out"
    code = iter_sr(["-i", str(inputs), "-o", str(out), "--model", str(converted_dir), "--steps", "1", "--quiet"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    written = {p.name.split("_x4")[0] for p in out.iterdir()} if out.exists() else set()
    failed = [line for line in err.splitlines() if line.startswith("iter-sr: error: ")]
    assert len(written) + len(failed) == 40, (sorted(written), failed)
    assert all("intact" not in line for line in failed), failed  # every intact file is upscaled
    assert code == (1 if failed else 0)
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix in (".tmp", ".part")]
    for path in out.iterdir():  # what was written is whole and ×4
        with PIL.Image.open(path) as image:
            image.load()
            assert image.width % S == 0 and image.height % S == 0


def _convert_in_process(capsys, *args) -> tuple[int, str]:
    spec = importlib.util.spec_from_file_location("convert_weights", CONVERT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_converter_on_truncated_flipped_and_foreign_checkpoints(official_dir, tmp_path, capsys):
    """24 damaged or foreign ITER files: a converted folder or a one-line error (exit 2) and nothing written."""
    rng = np.random.default_rng(1)
    vqgan, original = official_dir / "tiny_swinvqgan.pth", (official_dir / "tiny_iter_x4.pth").read_bytes()
    cases = []
    for index in range(8):
        cases.append(("truncated", original[: int(rng.integers(0, len(original)))]))
        flipped = bytearray(original)
        for position in rng.integers(0, len(flipped), size=int(rng.integers(1, 64))):
            flipped[position] ^= 1 << int(rng.integers(8))
        cases.append(("flipped", bytes(flipped)))
    foreign = [{"state_dict": {"w": torch.zeros(2)}}, [torch.zeros(1)], {"params": [1, 2]}, {"params": {"a": 1}},
               torch.zeros(3), {"params_ema": {}}, {"params": {"x": torch.zeros(1)}}, "text"]
    for obj in foreign:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        cases.append(("foreign", buffer.getvalue()))
    outcomes = {"converted": 0, "refused": 0}
    for index, (kind, data) in enumerate(cases):
        checkpoint, out = tmp_path / f"{kind}_{index}.pth", tmp_path / f"out_{index}"
        checkpoint.write_bytes(data)
        code, err = _convert_in_process(capsys, "--vqgan_checkpoint", vqgan, "--iter_checkpoint", checkpoint,
                                        "--output_dir", out)
        if code == 0:
            assert (out / "model_index.json").is_file() and kind == "flipped", (kind, err)
            outcomes["converted"] += 1
            continue
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (kind, code, err)
        assert "Traceback" not in err and not out.exists(), (kind, err)
        outcomes["refused"] += 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "staging folders were left behind"
    assert outcomes["refused"] >= 16, outcomes
