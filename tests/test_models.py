"""The ITER networks as diffusers models: save/load, outputs, determinism, gradient checkpointing, VQ API."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from iter_diffusers import (ITERDistortionRemovalEncoder, ITERRefinementTransformer, ITERTokenEvaluator,
                            ITERUpsamplingEncoder, ITERVQModel)

K = 16  # codebook size of the tiny models
SWIN = dict(swin_num_groups=1, swin_depth=2, swin_num_heads=2, swin_window_size=4, mlp_ratio=2.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_vq():
    torch.manual_seed(0)
    return ITERVQModel(
        base_channels=8, channel_multipliers=(1, 2, 2), layers_per_block=1, latent_channels=8, num_vq_embeddings=K,
        swin_dim=16, swin_num_groups=1, swin_depth=2, swin_num_heads=2, swin_window_size=4, mlp_ratio=2.0,
    )


def tiny_encoder(scale: int):
    torch.manual_seed(0)
    return ITERDistortionRemovalEncoder(
        scale_factor=scale, base_channels=8, blocks_per_stage=1, feature_dim=16, num_vq_embeddings=K, norm_num_groups=4,
        **SWIN,
    )


def tiny_upsampling_encoder():
    """x2 E_l on the tiny 4× VQGAN: 2 LQ pixels per token, like the x4 models on an 8× VQGAN."""
    return ITERUpsamplingEncoder.from_vqgan(tiny_vq(), scale_factor=2)


def tiny_evaluator():
    torch.manual_seed(0)
    return ITERTokenEvaluator(num_vq_embeddings=K, out_channels=2, hidden_dim=16, **SWIN)


def tiny_refiner():
    torch.manual_seed(0)
    return ITERRefinementTransformer(num_vq_embeddings=K, out_channels=K, use_mask_token=True, hidden_dim=16, **SWIN)


def token_inputs(with_masks: bool, batch=2, h=4, w=8):
    inputs = {
        "tokens": torch.randint(0, K, (batch, h, w), generator=gen(1)),
        "condition_tokens": torch.randint(0, K, (batch, h, w), generator=gen(2)),
    }
    if with_masks:
        inputs["visible_mask"] = (torch.rand(batch, h, w, generator=gen(3)) < 0.5).float()
        inputs["trusted_mask"] = (torch.rand(batch, h, w, generator=gen(4)) < 0.5).float()
    return inputs


# name -> (model factory, inputs factory, output shape, output field)
CASES = {
    "vqvae": (tiny_vq, lambda: {"sample": torch.rand(2, 3, 16, 32, generator=gen(5))}, (2, 3, 16, 32), "sample"),
    "encoder_x4": (
        lambda: tiny_encoder(4), lambda: {"sample": torch.rand(2, 3, 8, 16, generator=gen(5))}, (2, K, 4, 8), "logits"
    ),
    "encoder_x2": (
        lambda: tiny_encoder(2), lambda: {"sample": torch.rand(2, 3, 16, 32, generator=gen(5))}, (2, K, 4, 8), "logits"
    ),
    "upsampling_encoder": (
        tiny_upsampling_encoder, lambda: {"sample": torch.rand(2, 3, 8, 16, generator=gen(5))}, (2, K, 4, 8), "logits"
    ),
    "evaluator": (tiny_evaluator, lambda: token_inputs(False), (2, 2, 4, 8), "logits"),
    "refiner": (tiny_refiner, lambda: token_inputs(True), (2, K, 4, 8), "logits"),
}


@pytest.fixture(params=list(CASES))
def case(request):
    make_model, make_inputs, shape, field = CASES[request.param]
    return make_model(), make_inputs(), shape, field


def _out(model, inputs, field):
    with torch.no_grad():
        return getattr(model(**inputs), field)


# ---------------------------------------------------------------------------------------------- generic


@pytest.mark.parametrize("safe", [True, False])
def test_save_load_round_trip(case, tmp_path, safe):
    model, inputs, _, field = case
    model.eval()
    model.save_pretrained(tmp_path, safe_serialization=safe)
    weights = "diffusion_pytorch_model." + ("safetensors" if safe else "bin")
    assert (tmp_path / weights).is_file() and (tmp_path / "config.json").is_file()
    loaded = type(model).from_pretrained(tmp_path)
    assert not loaded.training
    public = lambda config: json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))  # noqa
    assert public(loaded.config) == public(model.config)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    assert torch.equal(_out(model, inputs, field), _out(loaded, inputs, field))


def test_load_dtype(case, tmp_path):
    model, inputs, _, field = case
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())


def test_return_dict_false_and_shapes(case):
    model, inputs, shape, field = case
    model.eval()
    with torch.no_grad():
        as_dict = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple)
    assert getattr(as_dict, field).shape == shape
    assert torch.isfinite(as_tuple[0]).all()
    # the tuple carries every field of the dataclass output, in order (the upsampling E_l dropped its latents)
    names = [f.name for f in dataclasses.fields(as_dict)]
    assert len(as_tuple) == len(names)
    for name, value in zip(names, as_tuple):
        expected = getattr(as_dict, name)
        assert (value is None and expected is None) or torch.equal(value, expected), name


def test_determinism(case):
    model, inputs, _, field = case
    model.eval()
    assert torch.equal(_out(model, inputs, field), _out(model, inputs, field))


def _loss_and_grads(model, inputs, field):
    model.zero_grad(set_to_none=True)
    out = model(**inputs)
    loss = getattr(out, field).float().square().mean()
    if field == "sample":
        loss = loss + out.commit_loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_equivalence(case):
    model, inputs, _, field = case
    model.train()
    loss, grads = _loss_and_grads(model, inputs, field)
    assert not model.is_gradient_checkpointing
    model.enable_gradient_checkpointing()
    assert model.is_gradient_checkpointing

    # prove the checkpointed path is taken
    calls = []
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False):
            inner = module._gradient_checkpointing_func

            def counting(*args, _inner=inner, **kwargs):
                calls.append(1)
                return _inner(*args, **kwargs)

            module._gradient_checkpointing_func = counting
    loss_ckpt, grads_ckpt = _loss_and_grads(model, inputs, field)
    assert calls, "gradient checkpointing was enabled but never used"
    assert torch.allclose(loss, loss_ckpt, atol=1e-5, rtol=0)
    assert grads.keys() == grads_ckpt.keys() and len(grads) > 0
    for name in grads:
        assert torch.allclose(grads[name], grads_ckpt[name], atol=1e-5, rtol=0), name
    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing


# ---------------------------------------------------------------------------------------------- VQ model


def test_vq_api_shapes_and_decode_paths():
    vq = tiny_vq().eval()
    assert vq.scale_factor == 4
    x = torch.rand(2, 3, 16, 32, generator=gen(6))
    with torch.no_grad():
        latents = vq.encode(x).latents
        assert latents.shape == (2, 8, 4, 8)
        assert torch.equal(vq.encode(x, return_dict=False)[0], latents)
        z_q, loss, (_, _, indices) = vq.quantize(latents)
        assert z_q.shape == latents.shape and loss.ndim == 0
        assert indices.shape == (2, 4, 8) and indices.dtype == torch.int64
        assert torch.equal(vq.encode_to_indices(x), indices)
        # nearest codebook entry
        codebook = vq.quantize.embedding.weight
        flat = latents.permute(0, 2, 3, 1).reshape(-1, 8)
        assert torch.equal(torch.cdist(flat, codebook).argmin(1), indices.flatten())

        from_indices = vq.decode(indices).sample
        from_flat = vq.decode(indices.flatten(), force_not_quantize=True, shape=(2, 4, 8, 8)).sample
        from_quantized = vq.decode(z_q, force_not_quantize=True).sample
        from_latents = vq.decode(latents).sample  # quantised inside
        tup = vq.decode(indices, return_dict=False)
    assert from_indices.shape == (2, 3, 16, 32)
    assert 0 <= from_indices.min() and from_indices.max() <= 1
    assert torch.equal(from_indices, from_flat)
    assert torch.equal(from_indices, tup[0])
    assert (from_indices - from_quantized).abs().max() < 1e-5
    assert (from_indices - from_latents).abs().max() < 1e-5


def test_vq_get_codebook_entry_flat_indices():
    vq = tiny_vq()
    indices = torch.randint(0, K, (2, 3, 5), generator=gen(7))
    with torch.no_grad():
        entries = vq.quantize.get_codebook_entry(indices.flatten(), shape=(2, 3, 5, 8))
        unflat = vq.quantize.get_codebook_entry(indices)
    assert entries.shape == (2, 8, 3, 5)
    expected = vq.quantize.embedding.weight[indices].permute(0, 3, 1, 2)
    assert torch.equal(entries, expected) and torch.equal(unflat, expected)


def test_vq_embed_probabilities_one_hot_equals_lookup():
    vq = tiny_vq()
    indices = torch.randint(0, K, (1, 4, 4), generator=gen(8))
    one_hot = F.one_hot(indices, K).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        assert torch.allclose(vq.quantize.embed_probabilities(one_hot), vq.quantize.get_codebook_entry(indices))


def test_vq_forward_commit_loss_legacy_placement():
    vq = tiny_vq().eval()
    x = torch.rand(1, 3, 16, 16, generator=gen(9))
    with torch.no_grad():
        out = vq(x)
        z = vq.encode(x).latents
        zq = vq.quantize.get_codebook_entry(vq.quantize.indices(z))
    mse = torch.mean((zq - z) ** 2)
    assert torch.allclose(out.commit_loss, mse * (1 + vq.config.commitment_beta), atol=1e-7)
    assert out.sample.shape == x.shape


# ---------------------------------------------------------------------------------------------- token networks


def _explicit_one_hot_combine(model, tokens, condition, visible=None, trusted=None):
    """The official formulation: one-hot (+ mask channel) maps through a bias-free 1x1 conv, then a 1x1 combine."""
    num_rows = model.code_embedding.num_embeddings
    weight = model.code_embedding.weight.t()[:, :, None, None]  # (hidden, rows, 1, 1)

    def one_hot(t, keep, flag):
        x = F.one_hot(t, num_rows).permute(0, 3, 1, 2).float()
        if keep is not None:
            x = x * keep[:, None]
        if flag is not None:
            x[:, K] = x[:, K] + flag  # the mask channel
        return x

    x = one_hot(tokens, visible, None if visible is None else 1 - visible)
    c = one_hot(condition, None, None if trusted is None else 1 - trusted)
    h = torch.cat([F.conv2d(x, weight), F.conv2d(c, weight)], dim=1)
    return F.conv2d(h, model.combine.weight[:, :, None, None])


@pytest.mark.parametrize("which", ["evaluator", "refiner"])
def test_embedding_lookup_equals_one_hot_conv(which):
    model = (tiny_evaluator if which == "evaluator" else tiny_refiner)().eval()
    inputs = token_inputs(which == "refiner")
    captured = {}
    model.swin.register_forward_pre_hook(lambda m, args: captured.setdefault("h", args[0]))
    with torch.no_grad():
        logits = model(**inputs).logits
        expected_h = _explicit_one_hot_combine(
            model, inputs["tokens"], inputs["condition_tokens"], inputs.get("visible_mask"), inputs.get("trusted_mask")
        )
        expected_logits = model.conv_out(F.silu(model.norm_out(model.swin(expected_h))))
    assert (captured["h"] - expected_h).abs().max() < 1e-5
    assert (logits - expected_logits).abs().max() < 1e-5


def test_refiner_mask_semantics():
    """Hidden positions ignore the token under them; untrusted condition positions carry the mask embedding."""
    model = tiny_refiner().eval()
    inputs = token_inputs(True)
    other = dict(inputs)
    hidden = inputs["visible_mask"] == 0
    other["tokens"] = torch.where(hidden, (inputs["tokens"] + 1) % K, inputs["tokens"])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, model(**other).logits)
        trusted_all = dict(inputs, trusted_mask=torch.ones_like(inputs["trusted_mask"]))
        assert not torch.equal(model(**inputs).logits, model(**trusted_all).logits)
    assert model.mask_token_id == K
    assert tiny_evaluator().mask_token_id is None


def test_evaluator_rejects_masks():
    with pytest.raises(ValueError, match="mask token"):
        tiny_evaluator()(**token_inputs(True))


def test_encoder_scale_validation_and_geometry():
    assert tiny_encoder(4).pixels_per_token == 2 and tiny_encoder(4).pad_multiple == 8
    assert tiny_encoder(2).pixels_per_token == 4 and tiny_encoder(2).pad_multiple == 16
    with pytest.raises(ValueError, match="scale_factor"):
        ITERDistortionRemovalEncoder(scale_factor=3)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_upsampling_encoder_starts_as_the_vqgan_on_the_bicubic_upscale(temperature):
    """from_vqgan: softmax(logits) = softmax(−‖z − e_k‖² / τ) for the VQGAN's latents z of the bicubic ×s image,
    so the argmax is the VQGAN's own tokenisation of it."""
    vq = tiny_vq().eval()
    with torch.no_grad():  # a codebook spread like a trained one, not the init's ±1/K
        vq.quantize.embedding.weight.normal_(generator=gen(7))
    encoder = ITERUpsamplingEncoder.from_vqgan(vq, scale_factor=2, temperature=temperature).eval()
    lq = torch.rand(2, 3, 8, 16, generator=gen(8))
    upscaled = F.interpolate(lq, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        logits = encoder(lq).logits
        latents = vq.encode(upscaled).latents
    distances = ((latents[:, None] - vq.quantize.embedding.weight[None, :, :, None, None]) ** 2).sum(2)
    torch.testing.assert_close(logits.softmax(1), (-distances / temperature).softmax(1), atol=1e-5, rtol=1e-4)
    assert torch.equal(logits.argmax(1), vq.quantize.indices(latents))
    assert encoder.pixels_per_token == 2 and encoder.pad_multiple == 8


def test_upsampling_encoder_config_validation():
    with pytest.raises(ValueError, match="does not match the 3 ×2 downsamplings"):
        ITERUpsamplingEncoder(vq_scale_factor=4)
    with pytest.raises(ValueError, match="must divide"):
        ITERUpsamplingEncoder(scale_factor=3)


# ---------------------------------------------------------------------------------------------- window-size errors

WINDOW = "multiples of the window size"


def test_window_size_errors():
    with torch.no_grad():
        with pytest.raises(ValueError, match=WINDOW):
            tiny_encoder(4)(torch.rand(1, 3, 8, 12))  # 4x6 tokens
        with pytest.raises(ValueError, match=WINDOW):
            tiny_encoder(2)(torch.rand(1, 3, 16, 24))  # 4x6 tokens
        with pytest.raises(ValueError, match=WINDOW):
            tiny_evaluator()(**token_inputs(False, h=4, w=6))
        with pytest.raises(ValueError, match=WINDOW):
            tiny_refiner()(**token_inputs(True, h=6, w=4))
        vq = tiny_vq()
        with pytest.raises(ValueError, match=WINDOW):
            vq.decode(torch.zeros(1, 4, 6, dtype=torch.long))
        with pytest.raises(ValueError, match=WINDOW):
            vq.encode(torch.rand(1, 3, 16, 24))  # latents 4x6


def _decoder_mean_shift(norm_num_groups: int) -> float:
    """How much the decoder's mean output colour moves when the latents get a constant offset."""
    torch.manual_seed(0)
    vq = ITERVQModel(base_channels=32, channel_multipliers=(1,), layers_per_block=1, latent_channels=8,
                     num_vq_embeddings=K, swin_dim=32, norm_num_groups=norm_num_groups, **SWIN).eval()
    z = torch.randn(1, 8, 32, 32, generator=gen(7))
    with torch.no_grad():
        means = [vq.decoder(z + offset).mean((2, 3)) for offset in (0.0, 3.0)]
    return (means[1] - means[0]).abs().max().item()


def test_vq_norm_num_groups():
    """Official 32 groups by default (C // 4 below 32 channels); fewer groups keep ≥ 4 channels per group. With
    one-channel groups (instance norm) before ``conv_out``, the decoder's mean colour hardly depends on its input:
    the reason the narrow demo model uses 8 groups."""
    official = ITERVQModel()
    norms = [m for m in official.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(n.num_groups == 32 for n in norms)
    assert {n.num_groups for n in tiny_vq().modules() if isinstance(n, torch.nn.GroupNorm)} == {2, 4}
    narrow = ITERVQModel(base_channels=32, channel_multipliers=(1, 2), layers_per_block=1, latent_channels=8,
                         num_vq_embeddings=K, swin_dim=32, norm_num_groups=8, **SWIN)
    assert {n.num_channels // n.num_groups for n in narrow.modules() if isinstance(n, torch.nn.GroupNorm)} == {4, 8}
    instance_norm, grouped = _decoder_mean_shift(32), _decoder_mean_shift(8)
    assert grouped > 0.05 and instance_norm < 0.1 * grouped, (instance_norm, grouped)


# ---------------------------------------------------------------------------------------------- diffusers' blocks


def test_vqgan_blocks_are_diffusers_blocks():
    """The VQGAN's residual blocks, resamplers and quantizer are diffusers' classes, computing exactly (fp32,
    torch.equal) the official blocks: GN → swish → conv3×3 twice plus the (1×1) shortcut; zero pad right/bottom then
    a stride-2 conv; nearest ×2 then a conv; and ``_no_split_modules`` names classes that are there."""
    from diffusers.models.autoencoders.vae import VectorQuantizer as DiffusersVectorQuantizer
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    vq = tiny_vq()
    for coder, stages in ((vq.encoder, vq.encoder.down), (vq.decoder, vq.decoder.up)):
        resnets = [coder.mid.resnet_in, coder.mid.resnet_out, *(r for stage in stages for r in stage.resnets)]
        assert all(type(r) is ResnetBlock2D for r in resnets)
    assert [type(s.downsample) for s in vq.encoder.down] == [Downsample2D, Downsample2D, type(None)]
    assert [type(s.upsample) for s in vq.decoder.up] == [Upsample2D, Upsample2D, type(None)]
    assert all(s.upsample is None for s in vq.encoder.down) and all(s.downsample is None for s in vq.decoder.up)
    assert isinstance(vq.quantize, DiffusersVectorQuantizer)
    names = {type(m).__name__ for m in vq.modules()}
    assert set(ITERVQModel._no_split_modules) <= names

    def gn_swish(norm, x):
        return F.silu(F.group_norm(x, norm.num_groups, norm.weight, norm.bias, 1e-6))

    x = torch.randn(2, 8, 8, 8, generator=gen(3))
    for training in (False, True):  # training: dropout(p=0) and contiguous() must change nothing
        vq.train(training)
        widen = vq.decoder.up[2].resnets[0]  # 16 -> 8 channels, with the 1×1 shortcut
        assert widen.conv_shortcut is not None and widen.norm1.num_groups == 4 and widen.norm2.num_groups == 2
        for block, h in ((widen, torch.randn(2, 16, 8, 8, generator=gen(4))), (vq.encoder.down[0].resnets[0], x)):
            expected = block.conv2(gn_swish(block.norm2, block.conv1(gn_swish(block.norm1, h))))
            expected = expected + (h if block.conv_shortcut is None else block.conv_shortcut(h))
            with torch.no_grad():
                assert torch.equal(block(h, None), expected.detach())
        down, up = vq.encoder.down[0].downsample, vq.decoder.up[1].upsample
        x16 = torch.randn(2, 16, 8, 8, generator=gen(5))
        with torch.no_grad():
            assert torch.equal(down(x), down.conv(F.pad(x, (0, 1, 0, 1))))
            assert torch.equal(up(x16), up.conv(F.interpolate(x16, scale_factor=2.0, mode="nearest")))
    # and in bf16 the same ops in bf16 (no upcast in Upsample2D since torch 2.1)
    up = up.to(torch.bfloat16)
    xb = x16.bfloat16()
    with torch.no_grad():
        assert up(xb).dtype == torch.bfloat16
        assert torch.equal(up(xb), up.conv(F.interpolate(xb, scale_factor=2.0, mode="nearest")))


def test_vqgan_state_dict_keys_are_the_official_layout():
    """The keys the converter writes and the bundled weights carry: no ``Conv2d_0`` alias, no ``time_emb_proj``."""
    keys = tiny_vq().state_dict().keys()
    assert "encoder.down.0.downsample.conv.weight" in keys and "decoder.up.0.upsample.conv.weight" in keys
    assert "decoder.up.2.resnets.0.conv_shortcut.weight" in keys and "quantize.embedding.weight" in keys
    assert not [k for k in keys if "Conv2d_0" in k or "time_emb_proj" in k or ".used" in k]


@pytest.mark.parametrize("component", ["vqvae", "encoder", "evaluator", "refiner"])
def test_bundled_model_loads_strictly(component):
    """Every tensor of the bundled model's safetensors loads into today's modules, none missing or unexpected:
    through ``load_state_dict(strict=True)`` and through ``from_pretrained`` (where diffusers only warns)."""
    import iter_diffusers
    from safetensors.torch import load_file

    folder = iter_diffusers.DEMO_MODEL_PATH / component
    cls = getattr(iter_diffusers, json.loads((folder / "config.json").read_text())["_class_name"])
    state = load_file(folder / "diffusion_pytorch_model.safetensors")
    model = cls.from_config(cls.load_config(folder))
    model.load_state_dict(state, strict=True)
    loaded, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert not info["error_msgs"], info
    assert loaded.state_dict().keys() == state.keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
