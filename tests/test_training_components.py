"""Tests of the training utilities: LQ synthesis, paired crop/augment and the losses (CPU, a few seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("cv2")
pytest.importorskip("scipy")

from iter_diffusers.models.discriminator import UNetDiscriminatorSN  # noqa: E402
from iter_diffusers.training import degradations as deg  # noqa: E402
from iter_diffusers.training import losses  # noqa: E402
from iter_diffusers.training.degradations import (  # noqa: E402
    BSRGANLightConfig,
    RealESRGANConfig,
    augment,
    degradation_config_from_dict,
    degrade,
    paired_random_crop,
    paired_random_resize,
)
from iter_diffusers.training.degradations.ops import convolve_mirror  # noqa: E402
from iter_diffusers.utils.gaussian import fspecial_gaussian  # noqa: E402


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A natural-ish test image: upsampled noise plus a little texture, float32 RGB in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((max(h // 8, 2), max(w // 8, 2), 3)).astype(np.float32)
    import cv2

    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + 0.05 * rng.random((h, w, 3)).astype(np.float32), 0, 1)


# Configs whose probabilities force every branch at least once over a few seeds.
BRANCH_CONFIGS = [
    BSRGANLightConfig(),
    BSRGANLightConfig(pre_downsample_prob=1.0, downsample2_resize_prob=0.0, noise_type_probs=(0, 0, 1)),
    BSRGANLightConfig(downsample2_resize_prob=1.0, force_odd_kernels=True, blur_aniso_prob=1.0),
    RealESRGANConfig(),
    RealESRGANConfig.from_dict(dict(sinc_prob=1.0, sinc_prob2=1.0, gaussian_noise_prob=0.0, gray_noise_prob=1.0)),
    RealESRGANConfig.from_dict(dict(kernel_prob=(0, 0, 1, 1, 1, 1), usm_sharpen=False, gaussian_noise_prob2=0.0,
                                    final_sinc_prob=0.0)),
]


# ------------------------------------------------------------------------------------------------ degradations


@pytest.mark.parametrize("config", BRANCH_CONFIGS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("scale", [2, 4])
def test_degrade_shapes_range_and_grid(config, scale):
    hq = smooth_image(50, 70)
    for seed in range(4):
        lq, hq_crop = degrade(hq, scale, config, np.random.default_rng(seed))
        assert hq_crop.shape == (50 - 50 % scale, 70 - 70 % scale, 3)
        assert lq.shape == (hq_crop.shape[0] // scale, hq_crop.shape[1] // scale, 3)
        assert lq.dtype == np.float32 and hq_crop.dtype == np.float32
        assert np.isfinite(lq).all() and lq.min() >= 0 and lq.max() <= 1
        np.testing.assert_allclose(lq * 255, np.rint(lq * 255), atol=1e-3)  # 8-bit values (JPEG last)
        assert abs(float(lq.mean()) - float(hq_crop.mean())) < 0.15  # still the same picture


def test_mod_crop_is_not_transposed():
    """The official crop swaps h and w; a tall non-square image must keep its full (cropped) width."""
    hq = smooth_image(30, 66)
    lq, hq_crop = degrade(hq, 4, None, np.random.default_rng(0))
    assert hq_crop.shape == (28, 64, 3) and lq.shape == (7, 16, 3)
    np.testing.assert_array_equal(hq_crop, hq[:28, :64])


@pytest.mark.parametrize("config", [BSRGANLightConfig(), RealESRGANConfig()], ids=["bsrgan", "realesrgan"])
def test_degrade_is_deterministic_per_seed(config):
    hq = smooth_image(48, 48)
    a, _ = degrade(hq, 4, config, np.random.default_rng(123))
    b, _ = degrade(hq, 4, config, np.random.default_rng(123))
    c, _ = degrade(hq, 4, config, np.random.default_rng(124))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.random.seed(0)  # the global RNG is never consulted
    d, _ = degrade(hq, 4, config, np.random.default_rng(123))
    np.testing.assert_array_equal(a, d)


def test_degrade_input_checks_and_uint8():
    hq = (smooth_image(16, 16) * 255).round().astype(np.uint8)
    lq, hq_crop = degrade(hq, 2, None, np.random.default_rng(0))
    assert lq.shape == (8, 8, 3) and hq_crop.max() <= 1.0
    with pytest.raises(TypeError):
        degrade(hq, 2, None, 0)
    with pytest.raises(ValueError):
        degrade(hq[..., 0], 2, None, np.random.default_rng(0))
    with pytest.raises(ValueError):
        degrade(hq[:1, :1], 2, None, np.random.default_rng(0))


@pytest.mark.parametrize("config", [BSRGANLightConfig(jpeg_prob=0.5, interpolations=("area",)), RealESRGANConfig()])
def test_config_round_trip(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert data["pipeline"] in ("bsrgan_light", "realesrgan")
    assert type(config).from_dict(data) == config
    assert degradation_config_from_dict(data) == config
    hq = smooth_image(32, 32)
    a, _ = degrade(hq, 2, data, np.random.default_rng(5))  # a dict is accepted too
    b, _ = degrade(hq, 2, config, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_config_validation():
    with pytest.raises(ValueError, match="Unknown"):
        BSRGANLightConfig.from_dict({"jpeg_probb": 0.5})
    with pytest.raises(ValueError):
        RealESRGANConfig.from_dict(BSRGANLightConfig().to_dict())
    with pytest.raises(ValueError):
        BSRGANLightConfig(jpeg_prob=1.5)
    with pytest.raises(ValueError):
        RealESRGANConfig(kernel_sizes=(6,))
    with pytest.raises(ValueError, match="sinc_prob2"):
        RealESRGANConfig.from_dict({"sinc_prob2": 2.0})
    with pytest.raises(ValueError, match="Unknown"):
        RealESRGANConfig.from_dict({"kernel_list3": ["iso"]})
    with pytest.raises(ValueError):
        degradation_config_from_dict({"pipeline": "nope"})


@pytest.mark.parametrize("size", [5, 6, 14])
def test_mirror_convolution_matches_scipy_for_even_kernels(size):
    from scipy import ndimage

    rng = np.random.default_rng(size)
    img = rng.random((17, 23, 3)).astype(np.float32)
    kernel = rng.random((size, size))
    kernel /= kernel.sum()
    expected = ndimage.convolve(img, kernel[..., None], mode="mirror")
    np.testing.assert_allclose(convolve_mirror(img, kernel), expected, atol=1e-5)


def test_matlab_imresize():
    const = np.full((12, 10, 3), 0.3, np.float32)
    out = deg.imresize_matlab(const, 0.5)
    assert out.shape == (6, 5, 3)
    np.testing.assert_allclose(out, 0.3, atol=1e-6)
    ramp = np.tile(np.arange(16, dtype=np.float32)[None, :, None], (4, 1, 1))
    half = deg.imresize_matlab(ramp, 0.5)[0, 2:-2, 0]  # interior: the mean of each pixel pair
    np.testing.assert_allclose(half, np.arange(16).reshape(-1, 2).mean(1)[2:-2], atol=1e-5)


def test_small_even_gaussian_does_not_vanish():
    """Official fspecial underflows to an all-zero kernel (black image) for tiny sigma and even size."""
    kernel = fspecial_gaussian(6, 1e-4)
    assert np.isfinite(kernel).all() and kernel.sum() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ crop / augment


def test_paired_random_crop_is_aligned():
    rng = np.random.default_rng(0)
    hq = rng.random((40, 48, 3)).astype(np.float32)
    lq = hq[::4, ::4]
    for seed in range(5):
        hq_p, lq_p = paired_random_crop(hq, lq, 16, 4, np.random.default_rng(seed))
        assert hq_p.shape == (16, 16, 3) and lq_p.shape == (4, 4, 3)
        np.testing.assert_array_equal(hq_p[::4, ::4], lq_p)
    with pytest.raises(ValueError):
        paired_random_crop(hq, lq[:-1], 16, 4, rng)
    with pytest.raises(ValueError):
        paired_random_crop(hq, lq, 64, 4, rng)
    with pytest.raises(ValueError):
        paired_random_crop(hq, lq, 18, 4, rng)


def test_augment_applies_the_same_ops_to_all_images():
    img = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    seen = set()
    for seed in range(40):
        (a, b), (hflip, vflip, transpose) = augment([img, img.copy()], np.random.default_rng(seed), return_ops=True)
        expected = img[:, ::-1] if hflip else img
        expected = expected[::-1] if vflip else expected
        expected = expected.transpose(1, 0, 2) if transpose else expected
        np.testing.assert_array_equal(a, expected)
        np.testing.assert_array_equal(a, b)
        assert a.flags.c_contiguous
        torch.from_numpy(a)  # no negative strides
        seen.add((hflip, vflip, transpose))
    assert len(seen) == 8
    single = augment(img, np.random.default_rng(0), hflip=False, rotation=False)
    np.testing.assert_array_equal(single, img)


def test_paired_random_resize_keeps_pairing():
    hq, lq = smooth_image(64, 80), smooth_image(16, 20)
    for seed in range(5):
        hq_r, lq_r = paired_random_resize(hq, lq, 32, 4, np.random.default_rng(seed))
        assert 32 <= hq_r.shape[0] <= 64 and hq_r.shape[0] % 4 == 0 and hq_r.shape[1] % 4 == 0
        assert lq_r.shape[:2] == (hq_r.shape[0] // 4, hq_r.shape[1] // 4)


# ------------------------------------------------------------------------------------------------ losses


@pytest.fixture(scope="module")
def random_vgg_loss():
    torch.manual_seed(0)
    return losses.VGG16PerceptualLoss(pretrained=False)


def test_vgg_layout_matches_torchvision_keys():
    keys = list(losses.VGG16Features(device="meta").state_dict())
    conv_indices = sorted({int(k.split(".")[1]) for k in keys})
    assert conv_indices == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert losses.VGG16_LAYER_NAMES[28] == "conv5_3" and losses.VGG16_LAYER_NAMES[29] == "relu5_3"


def test_vgg_perceptual_loss_random_weights(random_vgg_loss):
    torch.manual_seed(1)
    target = torch.rand(2, 3, 32, 32)
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1).requires_grad_(True)
    assert random_vgg_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    value = random_vgg_loss(pred, target)
    assert value.item() > 0
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in random_vgg_loss.parameters())
    random_vgg_loss.train()
    assert not random_vgg_loss.vgg.training


def test_vgg_perceptual_loss_variants(random_vgg_loss, tmp_path):
    torch.manual_seed(2)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    l1 = losses.VGG16PerceptualLoss(layer_weights={"conv1_2": 1.0, "relu2_2": 0.5}, distance="l1", pretrained=False)
    l1.vgg.load_state_dict(random_vgg_loss.vgg.state_dict())
    feats = random_vgg_loss.vgg(l1._normalise(torch.cat([x, y])), ["conv1_2", "relu2_2"])
    expected = sum(w * (feats[n][:2] - feats[n][2:]).abs().mean() for n, w in (("conv1_2", 1.0), ("relu2_2", 0.5)))
    assert l1(x, y).item() == pytest.approx(expected.item(), rel=1e-5)

    lin = {f"lin{i}.model.1.weight": torch.ones(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(lin, tmp_path / "vgg.pth")
    calibrated = losses.VGG16PerceptualLoss(pretrained=False, lpips_weights=tmp_path / "vgg.pth", reduction="none")
    calibrated.vgg.load_state_dict(random_vgg_loss.vgg.state_dict())
    per_image = calibrated(x, y)
    assert per_image.shape == (2,)
    torch.testing.assert_close(per_image.mean(), random_vgg_loss(x, y))  # unit LPIPS weights = uncalibrated
    with pytest.raises(ValueError):
        losses.VGG16PerceptualLoss(layer_weights={"relu9_9": 1.0}, pretrained=False)


def test_vgg_weights_load_from_local_file(random_vgg_loss, tmp_path):
    from safetensors.torch import save_file

    state = {f"model.{k}": v.clone() for k, v in random_vgg_loss.vgg.state_dict().items()}
    state["head.fc.weight"] = torch.zeros(2, 2)  # classifier keys are ignored
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = losses.VGG16PerceptualLoss(pretrained=tmp_path)  # a folder holding model.safetensors
    for (name, a), b in zip(loaded.vgg.state_dict().items(), random_vgg_loss.vgg.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    save_file({"features.0.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="not a VGG16"):
        losses.load_vgg16_features_state_dict(tmp_path / "bad.safetensors")


def test_vgg_offline_error_message(tmp_path, monkeypatch):
    with pytest.raises(losses.VGGWeightsUnavailableError) as info:
        losses.VGG16PerceptualLoss(cache_dir=tmp_path, local_files_only=True)
    assert isinstance(info.value, OSError)
    message = str(info.value)
    assert "timm/vgg16.tv_in1k" in message and "pretrained=" in message

    import huggingface_hub

    def no_network(*args, **kwargs):
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(OSError, match="network unreachable"):
        losses.VGG16PerceptualLoss()
    with pytest.raises(OSError, match="not found"):
        losses.VGG16PerceptualLoss(pretrained=tmp_path / "missing.safetensors")


def test_ssim_loss_values_and_gradient():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    torch.manual_seed(0)
    x = torch.rand(1, 3, 24, 24, dtype=torch.float64)
    y = (0.7 * x + 0.3 * torch.rand_like(x)).requires_grad_(True)
    assert losses.ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
    value = losses.ssim(x, y)
    expected = skimage_metrics.structural_similarity(
        x[0].permute(1, 2, 0).numpy(), y[0].detach().permute(1, 2, 0).numpy(), channel_axis=2,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
    )
    assert value.item() == pytest.approx(expected, abs=1e-4)
    loss = losses.ssim_loss(x, y)
    assert 0 < loss.item() < 1
    loss.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    quantized = losses.ssim(x.float(), y.detach().float(), quantize=True)
    assert quantized.item() == pytest.approx(value.item(), abs=1e-2)


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert losses.discriminator_hinge_loss(real, fake).item() == pytest.approx(0.25 + 0.5)
    assert losses.discriminator_hinge_loss(torch.full((3,), 1.0), torch.full((3,), -1.0)).item() == 0.0
    assert losses.generator_hinge_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_unet_discriminator_shape_and_round_trip(tmp_path):
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(num_in_ch=3, num_feat=8)
    x = torch.rand(2, 3, 32, 24)
    assert disc(x).shape == (2, 1, 32, 24)  # training-mode call also runs a power iteration
    assert "conv1.weight_orig" in disc.state_dict() and "conv1.weight_u" in disc.state_dict()
    disc.eval()
    expected = disc(x)
    disc.save_pretrained(tmp_path)
    loaded = UNetDiscriminatorSN.from_pretrained(tmp_path).eval()
    assert loaded.config.num_feat == 8 and loaded.config.skip_connection is True
    torch.testing.assert_close(loaded(x), expected)
    no_skip = UNetDiscriminatorSN(num_feat=8, skip_connection=False)
    out = no_skip(x)
    out.mean().backward()
    assert no_skip.conv1.weight_orig.grad is not None
    with pytest.raises(ValueError):
        disc(torch.rand(1, 3, 30, 32))


def test_class_balanced_cross_entropy_matches_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(6, 2)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    beta, eps = 0.9999, 1e-8
    counts = torch.tensor([4.0, 2.0])
    w = (1 - beta) / (1 - beta**counts + eps)
    w = w / (w.sum() + eps) * 2
    nll = -torch.log_softmax(logits, dim=1)[torch.arange(6), labels]
    expected = (w[labels] * nll).sum() / w[labels].sum()
    torch.testing.assert_close(losses.class_balanced_cross_entropy(logits, labels), expected)
    # balanced classes: plain cross-entropy
    balanced = torch.tensor([0, 1, 0, 1, 0, 1])
    torch.testing.assert_close(losses.class_balanced_cross_entropy(logits, balanced), F.cross_entropy(logits, balanced))
    # (B, K, H, W) logits with (B, H, W) labels = the official permute/flatten
    spatial = torch.randn(2, 2, 3, 4, requires_grad=True)
    mask = torch.randint(0, 2, (2, 3, 4))
    flat = losses.class_balanced_cross_entropy(spatial.permute(0, 2, 3, 1).flatten(0, 2), mask.flatten())
    torch.testing.assert_close(losses.class_balanced_cross_entropy(spatial, mask), flat)
    flat.backward()
    assert spatial.grad is not None


def test_vq_loss_legacy_placement():
    """The quantizer's loss weighs the codebook term by β (legacy, as the official VQGAN) or the commitment term."""
    from iter_diffusers.models.vqgan import VectorQuantizer

    for legacy, z_weight, code_weight in ((True, 1.0, 0.25), (False, 0.25, 1.0)):
        quantizer = VectorQuantizer(num_embeddings=1, embed_dim=4, beta=0.25, legacy=legacy)
        with torch.no_grad():
            quantizer.embedding.weight.fill_(1.0)
        z = torch.zeros(2, 4, 1, 1, requires_grad=True)
        _, loss, _ = quantizer(z)
        assert loss.item() == pytest.approx(1.0 + 0.25)
        loss.backward()
        # d/dz of the commitment term mean((z_q - z)^2) over 8 values; the straight-through output adds nothing.
        torch.testing.assert_close(z.grad, torch.full_like(z, -z_weight * 2.0 / 8))
        torch.testing.assert_close(quantizer.embedding.weight.grad, torch.full((1, 4), code_weight * 2.0 * 2 / 8))




def test_expected_embedding_loss_prefers_near_miss_codes():
    """E_l's optional term: zero at the right code, smaller for a code near it than for one far away, and its
    gradient reaches the logits only (the frozen codebook is left alone)."""
    from iter_diffusers.models.vqgan import VectorQuantizer
    from iter_diffusers.training.objectives import expected_embedding_loss

    quantizer = VectorQuantizer(num_embeddings=3, embed_dim=2)
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0]]))
    target = torch.zeros(1, 1, 1, dtype=torch.long)  # code 0

    def loss_for(code: int, requires_grad: bool = False) -> torch.Tensor:
        logits = torch.full((1, 3, 1, 1), -50.0)
        logits[0, code] = 50.0
        logits.requires_grad_(requires_grad)
        return expected_embedding_loss(quantizer, logits, target), logits

    assert loss_for(0)[0].item() == pytest.approx(0.0, abs=1e-12)
    assert 0 < loss_for(1)[0].item() < loss_for(2)[0].item()
    soft = torch.zeros(1, 3, 1, 1, requires_grad=True)  # uniform: the gradient is not saturated
    expected_embedding_loss(quantizer, soft, target).backward()
    assert soft.grad.abs().sum() > 0 and quantizer.embedding.weight.grad is None
