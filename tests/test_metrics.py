"""Tests of the evaluation metrics (PSNR, SSIM, NIQE, MATLAB imresize) and of the ``iter-sr-eval`` CLI.

Reference values
----------------
The numbers marked "BasicSR" were produced on 2026-11-26 by BasicSR 1.4.2's own ``calculate_psnr``,
``calculate_ssim``, ``calculate_niqe`` and ``matlab_functions.imresize`` (files of the PyPI sdist
``basicsr==1.4.2``, run with opencv-python-headless 5.0.0, NumPy 2.4.6, SciPy 1.17.1, PyTorch 2.13 CPU), on images
of scikit-image 0.26 (``skimage.data``) passed in BGR order as BasicSR expects, with ``test_y_channel=True``
unless stated otherwise. ``degrade`` below (deterministic, NumPy only) made the distorted images.

For NIQE, BasicSR works in float32 while this package (like the MATLAB original) works in float64, which moves
NIQE by up to ~1e-3 on natural photos and a few 1e-3 on the blocky/noisy ``degrade`` output. Against MATLAB itself
the float64 implementation is closer: on BasicSR's ``test_scripts/data/baboon.png`` (git blob of 2021-11-29) this
package gives 5.7295739, MATLAB R2021a 5.72957338 (value quoted in BasicSR's ``calculate_niqe`` docstring) and
BasicSR 5.7295726. That image is not shipped with these tests.
"""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
try:
    import iter_diffusers.evaluation  # noqa: F401
except ImportError:  # source checkout without an install
    sys.path.insert(0, str(ROOT / "src"))

from iter_diffusers.evaluation import (  # noqa: E402
    calculate_niqe,
    calculate_psnr,
    calculate_ssim,
    imresize,
    load_niqe_params,
    rgb2ycbcr_y,
)
from iter_diffusers.evaluation.cli import main  # noqa: E402
from iter_diffusers.evaluation.niqe import NIQE_PARAMS_PATH, niqe  # noqa: E402

skdata = pytest.importorskip("skimage.data")


def degrade(img: np.ndarray) -> np.ndarray:
    """4x4 box average + nearest upsampling, then RandomState(0) integer noise in [-8, 8] (deterministic)."""
    h, w = img.shape[:2]
    h4, w4 = h // 4 * 4, w // 4 * 4
    x = img.astype(np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    c = x.shape[2]
    box = x[:h4, :w4].reshape(h4 // 4, 4, w4 // 4, 4, c).mean(axis=(1, 3))
    out = x.copy()
    out[:h4, :w4] = np.repeat(np.repeat(box, 4, axis=0), 4, axis=1)
    noise = np.random.RandomState(0).randint(-8, 9, size=out.shape)
    out = np.clip(np.round(out) + noise, 0, 255).astype(np.uint8)
    return out[:, :, 0] if img.ndim == 2 else out


_CACHE = {}


def image(name: str) -> np.ndarray:
    if name not in _CACHE:
        _CACHE[name] = getattr(skdata, name)()
    return _CACHE[name]


# ------------------------------------------------------------------------------------------------ PSNR / SSIM


def test_y_channel_matches_matlab_rgb2ycbcr():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = rgb2ycbcr_y(rgb)[0]
    np.testing.assert_allclose(y, [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-9)
    # float input in [0, 1] is the same thing
    np.testing.assert_allclose(rgb2ycbcr_y(rgb / 255.0), rgb2ycbcr_y(rgb), atol=1e-9)


def test_identical_images():
    img = image("astronaut")[:64, :80]
    assert calculate_psnr(img, img, crop_border=4) == math.inf
    assert calculate_ssim(img, img, crop_border=4) == pytest.approx(1.0, abs=1e-12)
    assert calculate_ssim(img, img, test_y_channel=False) == pytest.approx(1.0, abs=1e-12)


def test_uint8_and_float_inputs_agree():
    a = image("chelsea")[:100, :120]
    b = degrade(a)
    assert calculate_psnr(a, b) == pytest.approx(calculate_psnr(a / 255.0, b / 255.0), abs=1e-9)
    assert calculate_ssim(a, b) == pytest.approx(calculate_ssim(a.astype(np.float32) / 255, b / 255.0), abs=1e-6)


def test_shape_mismatch_raises():
    a = image("astronaut")[:50, :50]
    with pytest.raises(ValueError, match="shapes differ"):
        calculate_psnr(a, a[:49])
    with pytest.raises(ValueError, match="shapes differ"):
        calculate_ssim(a, a[:, :49])


# (image, crop_border, test_y_channel) -> (PSNR, SSIM) from BasicSR 1.4.2 on (img, degrade(img)).
PSNR_SSIM_REFERENCE = {
    ("astronaut", 4, True): (24.714015628606298, 0.7370627785704275),
    ("astronaut", 0, False): (23.08390668355729, 0.6152450575287042),
    ("chelsea", 0, True): (29.448121015960282, 0.7092427230194249),
    ("coffee", 4, False): (24.26655849509072, 0.5818941970404966),
    ("camera", 4, True): (24.6485530198521, 0.5877511236704612),  # grey image: used as is
}


@pytest.mark.parametrize("key", sorted(PSNR_SSIM_REFERENCE))
def test_psnr_ssim_match_basicsr(key):
    name, crop, y = key
    ref_psnr, ref_ssim = PSNR_SSIM_REFERENCE[key]
    img = image(name)
    deg = degrade(img)
    assert calculate_psnr(img, deg, crop_border=crop, test_y_channel=y) == pytest.approx(ref_psnr, abs=1e-6)
    assert calculate_ssim(img, deg, crop_border=crop, test_y_channel=y) == pytest.approx(ref_ssim, abs=1e-7)


# ------------------------------------------------------------------------------------------------ imresize


def _ramp():
    return ((np.arange(48, dtype=np.float64).reshape(6, 8) ** 1.5) % 17) / 17


def test_imresize_matches_basicsr_matlab_port():
    # BasicSR 1.4.2 basicsr.utils.matlab_functions.imresize (float32), antialiasing=True
    half = np.array(
        [
            [0.2281901836, 0.3651368618, 0.5551575422, 0.3853804171],
            [0.5932950377, 0.5564671159, 0.4587852359, 0.3326283097],
            [0.5834270716, 0.3318285644, 0.4647274315, 0.6096199155],
        ]
    )
    np.testing.assert_allclose(imresize(_ramp(), scale=0.5), half, atol=1e-6)
    up = imresize(_ramp(), scale=2)
    assert up.shape == (12, 16)
    row0 = [-0.0348046198, -0.0250225402, -0.0054583852, 0.0255968794, 0.0681432635, 0.1487859488, 0.2675249279,
            0.3628720343, 0.4348273277, 0.5125105977, 0.5959218740, 0.7401028872, 0.9450535774, 0.7797102928,
            0.2440731376, -0.0237454623]  # fmt: skip
    col3 = [0.0255968794, 0.2152780145, 0.5946401954, 0.6053501964, 0.2474078685, 0.1662177742, 0.3617799282,
            0.3962849081, 0.2697325945, 0.2344197035, 0.2903461456, 0.3183093667]  # fmt: skip
    np.testing.assert_allclose(up[0], row0, atol=1e-6)
    np.testing.assert_allclose(up[:, 3], col3, atol=1e-6)


def test_imresize_shapes_and_constant():
    img = np.full((37, 50, 3), 0.25)
    out = imresize(img, scale=0.5)
    assert out.shape == (19, 25, 3)  # ceil, as MATLAB
    np.testing.assert_allclose(out, 0.25, atol=1e-12)
    assert imresize(img[:, :, 0], output_shape=(10, 20)).shape == (10, 20)
    with pytest.raises(ValueError):
        imresize(img, scale=0.5, output_shape=(10, 10))


# ------------------------------------------------------------------------------------------------ NIQE


def test_niqe_parameters_file():
    assert NIQE_PARAMS_PATH.is_file()
    mu, cov = load_niqe_params()
    assert mu.shape == (36,) and cov.shape == (36, 36)
    np.testing.assert_allclose(cov, cov.T, atol=1e-10)
    # the stored window is fspecial('gaussian', 7, 7/6), which niqe.py builds itself
    from iter_diffusers.evaluation.niqe import _NIQE_WINDOW

    with np.load(NIQE_PARAMS_PATH) as data:
        np.testing.assert_allclose(np.outer(_NIQE_WINDOW, _NIQE_WINDOW), data["gaussian_window"], atol=1e-12)


# (image, degraded?, crop_border) -> NIQE from BasicSR 1.4.2 calculate_niqe(img_bgr, crop_border) (convert_to='y')
NIQE_REFERENCE = {
    ("astronaut", False, 0): 3.0649476661847754,
    ("camera", False, 4): 3.0465181612260595,
    ("chelsea", False, 0): 2.6255243812915023,
    ("coffee", False, 4): 4.079406018889277,
    ("astronaut", True, 4): 10.914402539346591,
    ("coffee", True, 0): 10.804214421322676,
}


@pytest.mark.parametrize("key", sorted(NIQE_REFERENCE))
def test_niqe_matches_basicsr(key):
    name, degraded, crop = key
    img = degrade(image(name)) if degraded else image(name)
    # float32 (BasicSR) vs float64 (here): 1e-3 on photos; the blocky+noisy degraded images are more sensitive.
    tol = 5e-3 if degraded else 1e-3
    assert calculate_niqe(img, crop_border=crop) == pytest.approx(NIQE_REFERENCE[key], abs=tol)


def test_niqe_float_input_and_flat_image():
    img = image("chelsea")[:200, :300]
    assert calculate_niqe(img / 255.0) == pytest.approx(calculate_niqe(img), abs=1e-9)
    with pytest.raises(ValueError, match="two 96x96 blocks"):
        calculate_niqe(img[:100, :100])
    # a flat image has no usable block statistics: NaN rather than a crash
    assert math.isnan(niqe(np.full((192, 192), 128.0)))


# ------------------------------------------------------------------------------------------------ CLI


def _save(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def folders(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    a = image("astronaut")[100:300, 120:320]  # 200x200: two NIQE blocks per side after a 4 px crop
    b = image("coffee")[:200, 100:300]
    _save(gt / "a.png", a)
    _save(gt / "b.png", b)
    _save(pred / "a_ITER.png", degrade(a))
    _save(pred / "b_ITER.png", b)  # identical -> infinite PSNR
    return tmp_path, gt, pred, {"a": a, "b": b}


def test_cli_paired(folders, capsys):
    tmp, gt, pred, imgs = folders
    out_json, out_md = tmp / "out" / "m.json", tmp / "out" / "m.md"
    rc = main(["--pred", str(pred), "--gt", str(gt), "--pred_suffix", "_ITER", "--json", str(out_json),
               "--markdown", str(out_md)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "Mean (2 images)" in printed

    data = json.loads(out_json.read_text())
    assert data["count"] == 2 and data["settings"]["crop_border"] == 4 and data["settings"]["test_y_channel"]
    rows = {r["name"]: r for r in data["images"]}
    assert set(rows) == {"a", "b"}
    a, deg = imgs["a"], degrade(imgs["a"])
    assert rows["a"]["psnr"] == pytest.approx(calculate_psnr(deg, a, 4), abs=1e-9)
    assert rows["a"]["ssim"] == pytest.approx(calculate_ssim(deg, a, 4), abs=1e-9)
    assert rows["a"]["niqe"] == pytest.approx(calculate_niqe(deg, 4), abs=1e-9)
    assert rows["b"]["psnr"] == "inf" and rows["b"]["ssim"] == pytest.approx(1.0)
    assert data["mean"]["psnr"] == "inf"
    assert data["mean"]["ssim"] == pytest.approx((rows["a"]["ssim"] + 1.0) / 2)
    assert data["mean"]["niqe"] == pytest.approx((rows["a"]["niqe"] + rows["b"]["niqe"]) / 2)

    md = out_md.read_text(encoding="utf-8")
    assert md.startswith("| Image | PSNR (dB)")
    assert "| a | " in md and "**Mean (2 images)**" in md and "crop_border=4" in md


def test_cli_rgb_option(folders, tmp_path):
    _, gt, pred, imgs = folders
    out_json = tmp_path / "rgb.json"
    rc = main(["--pred", str(pred), "--gt", str(gt), "--pred_suffix", "_ITER", "--rgb", "--crop_border", "0",
               "--no_niqe", "--quiet", "--json", str(out_json)])  # fmt: skip
    assert rc == 0
    data = json.loads(out_json.read_text())
    row = {r["name"]: r for r in data["images"]}["a"]
    assert "niqe" not in row and data["settings"]["test_y_channel"] is False
    a = imgs["a"]
    assert row["psnr"] == pytest.approx(calculate_psnr(degrade(a), a, 0, test_y_channel=False), abs=1e-9)


def test_cli_no_reference(folders, tmp_path, capsys):
    _, _, pred, _ = folders
    out_json = tmp_path / "niqe.json"
    assert main(["--pred", str(pred), "--json", str(out_json)]) == 0
    data = json.loads(out_json.read_text())
    assert data["settings"]["metrics"] == ["niqe"]
    assert [r["name"] for r in data["images"]] == ["a_ITER", "b_ITER"]
    assert all("psnr" not in r for r in data["images"])
    assert "NIQE" in capsys.readouterr().out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("iter-sr-eval: error:")
    return err


def test_cli_errors(folders, tmp_path, capsys):
    _, gt, pred, imgs = folders
    assert main(["--pred", str(tmp_path / "missing")]) == 2
    assert "does not exist" in _error_line(capsys)

    # without --pred_suffix the names do not pair
    assert main(["--pred", str(pred), "--gt", str(gt)]) == 2
    err = _error_line(capsys)
    assert "no ground truth" in err and "a_ITER.png" in err and "--pred_suffix" in err

    # a ground truth without prediction
    _save(gt / "c.png", imgs["a"])
    assert main(["--pred", str(pred), "--gt", str(gt), "--pred_suffix", "_ITER"]) == 2
    assert "have no prediction" in _error_line(capsys)
    (gt / "c.png").unlink()

    # size mismatch
    _save(pred / "b_ITER.png", imgs["b"][:, :150])
    assert main(["--pred", str(pred), "--gt", str(gt), "--pred_suffix", "_ITER"]) == 2
    err = _error_line(capsys)
    assert "size mismatch for 'b'" in err and "150x200" in err


def test_evaluate_script_wrapper(monkeypatch, capsys):
    # run scripts/evaluate.py in-process (a subprocess would pay the package import again)
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / "scripts" / "evaluate.py"), run_name="__main__")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--pred" in out and "LPIPS" in out


def test_cli_lpips(folders, capsys):
    """--lpips with weight files (random here: the real ones cannot be downloaded offline) equals the LPIPS-VGG
    formula of VGG16PerceptualLoss on the cropped images; missing weights stop the command with one line."""
    import torch
    from safetensors.torch import save_file

    from iter_diffusers.training.losses import (
        LPIPS_LAYERS,
        VGG16Features,
        VGG16PerceptualLoss,
    )

    tmp, gt, pred, imgs = folders
    torch.manual_seed(0)
    vgg_file, linear_file = tmp / "vgg16.safetensors", tmp / "vgg.pth"
    save_file({k: v.contiguous() for k, v in VGG16Features().state_dict().items()}, str(vgg_file))
    channels = {"relu1_2": 64, "relu2_2": 128, "relu3_3": 256, "relu4_3": 512, "relu5_3": 512}
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, channels[n], 1, 1) for i, n in enumerate(LPIPS_LAYERS)},
               linear_file)
    out_json = tmp / "lpips.json"
    assert main(["--pred", str(pred), "--gt", str(gt), "--pred_suffix", "_ITER", "--lpips", str(linear_file),
                 "--vgg_weights", str(vgg_file), "--json", str(out_json), "--quiet"]) == 0  # fmt: skip
    rows = {r["name"]: r for r in json.loads(out_json.read_text())["images"]}
    reference = VGG16PerceptualLoss(distance="lpips", pretrained=vgg_file, lpips_weights=linear_file)

    def as_tensor(image):
        return torch.from_numpy(image[4:-4, 4:-4].copy()).permute(2, 0, 1)[None].float() / 255

    with torch.no_grad():
        expected = reference(as_tensor(degrade(imgs["a"])), as_tensor(imgs["a"])).item()
    assert rows["a"]["lpips"] == pytest.approx(expected, rel=1e-5) and expected > 0
    assert rows["b"]["lpips"] == pytest.approx(0.0, abs=1e-7)  # identical images

    capsys.readouterr()
    assert main(["--pred", str(pred), "--gt", str(gt), "--pred_suffix", "_ITER", "--lpips", str(tmp / "no.pth"),
                 "--vgg_weights", str(vgg_file)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("iter-sr-eval: error: LPIPS unavailable") and "no.pth" in err and "\n" not in err
    assert main(["--pred", str(pred), "--lpips", str(linear_file)]) == 2  # no ground truth


# --------------------------------------------------------------------------------------- edge sharpness, flat noise
def _edge_and_flat_photo() -> np.ndarray:
    """A grey image: a flat left half, a flat right half, one vertical step edge between them."""
    image = np.full((64, 64, 3), 60, np.uint8)
    image[:, 32:] = 190
    return image


def test_edge_sharpness_is_one_for_the_reference_and_falls_with_blur():
    from PIL import Image, ImageFilter

    from iter_diffusers.evaluation import calculate_edge_sharpness

    hq = _edge_and_flat_photo()
    assert calculate_edge_sharpness(hq, hq, crop_border=4) == pytest.approx(1.0)
    blurred = [np.asarray(Image.fromarray(hq).filter(ImageFilter.GaussianBlur(r))) for r in (1, 3)]
    mild, strong = (calculate_edge_sharpness(b, hq, crop_border=4) for b in blurred)
    assert 1 > mild > strong > 0
    overshoot = np.clip((hq.astype(int) - 125) * 1.5 + 125, 0, 255).astype(np.uint8)  # a steeper step
    assert calculate_edge_sharpness(overshoot, hq, crop_border=4) == pytest.approx(1.5, rel=1e-3)


def test_flat_noise_sees_speckle_in_flat_regions_only():
    from iter_diffusers.evaluation import calculate_flat_noise

    hq = _edge_and_flat_photo()
    assert calculate_flat_noise(hq, hq, crop_border=4) == pytest.approx(0.0, abs=1e-9)
    speckle = np.random.default_rng(0).normal(0, 8, hq.shape)
    noisy = np.clip(hq + speckle, 0, 255).astype(np.uint8)
    assert calculate_flat_noise(noisy, hq, crop_border=4) > 3  # grey levels of invented high frequencies
    edge_only = hq.copy()
    edge_only[:, 31:33] = 255  # a halo on the edge, where the reference is not flat
    assert calculate_flat_noise(edge_only, hq, crop_border=4, flat_fraction=0.5) == pytest.approx(0.0, abs=1e-9)


def test_sharpness_metrics_refuse_mismatched_or_flat_input():
    from iter_diffusers.evaluation import calculate_edge_sharpness, calculate_flat_noise

    hq = _edge_and_flat_photo()
    with pytest.raises(ValueError, match="shapes differ"):
        calculate_edge_sharpness(hq[:32], hq)
    with pytest.raises(ValueError, match="flat_fraction"):
        calculate_flat_noise(hq, hq, flat_fraction=0)
    with pytest.raises(ValueError, match="at least 3x3"):
        calculate_flat_noise(hq[:8, :8], hq[:8, :8], crop_border=3)
    with pytest.raises(ValueError, match="NaN"):
        calculate_edge_sharpness(np.full(hq.shape, np.nan), hq)
    # no edges worth a ratio (flat, or a 1-grey-level step): NaN, not a number that would skew an average
    assert math.isnan(calculate_edge_sharpness(hq, np.full_like(hq, 7)))
    faint = np.full_like(hq, 100)
    faint[:, 32:] = 101
    assert math.isnan(calculate_edge_sharpness(hq, faint))


def test_cli_lpips_style_squeeze(folders, capsys, monkeypatch):
    """--lpips_style_squeeze (random weights here in place of the converted ones) equals SqueezeDistance on the
    cropped RGB images, under its own name, never "LPIPS"; an unavailable download stops with one line."""
    import torch

    from iter_diffusers import offline_weights
    from iter_diffusers.conversion.state_dicts import ConversionError
    from iter_diffusers.evaluation.squeeze_distance import SqueezeDistance

    tmp, gt, pred, imgs = folders
    torch.manual_seed(0)
    model = SqueezeDistance(heads=[torch.rand(c) for c in (64, 128, 256, 384, 384, 512, 512)])
    monkeypatch.setattr(offline_weights, "squeeze_distance", lambda: model)
    out_md, out_json = tmp / "s.md", tmp / "s.json"
    assert main(["--pred", str(pred), "--gt", str(gt), "--pred_suffix", "_ITER", "--lpips_style_squeeze",
                 "--no_niqe", "--json", str(out_json), "--markdown", str(out_md)]) == 0  # fmt: skip
    rows = {r["name"]: r for r in json.loads(out_json.read_text())["images"]}

    def as_tensor(image):
        return torch.from_numpy(image[4:-4, 4:-4].copy()).permute(2, 0, 1)[None].float() / 255

    with torch.no_grad():
        expected = model(as_tensor(degrade(imgs["a"])), as_tensor(imgs["a"])).item()
    assert rows["a"]["lpips_style_sqz"] == pytest.approx(expected, rel=1e-5) and expected > 0
    assert rows["b"]["lpips_style_sqz"] == pytest.approx(0.0, abs=1e-7)
    assert "lpips" not in rows["a"]
    table = out_md.read_text()
    assert "LPIPS-style (Sqz-Caffe) ↓" in table and "not LPIPS" in table
    assert "LPIPS-style (Sqz-Caffe)" in capsys.readouterr().out

    def unavailable():
        raise ConversionError("cannot read the package index https://pypi.org/simple/lpips/: no network")

    monkeypatch.setattr(offline_weights, "squeeze_distance", unavailable)
    assert main(["--pred", str(pred), "--gt", str(gt), "--pred_suffix", "_ITER", "--lpips_style_squeeze"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iter-sr-eval: error: the LPIPS-style SqueezeNet distance is unavailable") and "\n" not in err
    assert main(["--pred", str(pred), "--lpips_style_squeeze"]) == 2  # no ground truth
