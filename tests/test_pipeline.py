"""ITERPipeline against the diffusers pipeline conventions, on the tiny converted official checkpoints (CPU).

The ``pipe`` fixture (conftest) is the tiny x4 pipeline with the progress bar disabled.
"""

import json
import math
from pathlib import Path

import numpy as np
import PIL.Image

import pytest
import torch
import torch.nn.functional as F
from diffusers.callbacks import PipelineCallback

from conftest import seeded
from iter_diffusers import ITERPipeline, ITERPipelineOutput
from iter_diffusers.pipelines import pipeline_iter, tiling
from iter_diffusers.pipelines.image_io import mirror_pad
from iter_diffusers.pipelines.pipeline_iter import _RunResult
from iter_diffusers.pipelines.tiling import overlap_ramp as _overlap_ramp

S = 4  # the fixture's scale factor
STEPS = 4  # enough for steps to execute on the 16x16 inputs (φ_e trusts ~40% of S_l)

# what model_index.json names: the code files the folder carries (see pipelines/hub_code.py)
COMPONENT_ENTRIES = {
    "vqvae": ["iter_diffusers_models", "ITERVQModel"],
    "encoder": ["iter_diffusers_models", "ITERDistortionRemovalEncoder"],
    "evaluator": ["iter_diffusers_models", "ITERTokenEvaluator"],
    "refiner": ["iter_diffusers_models", "ITERRefinementTransformer"],
    "scheduler": ["iter_diffusers_scheduler", "MaskedTokenScheduler"],
}


def image(h=16, w=16, batch=1, seed=0) -> torch.Tensor:
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def run(pipe, x, seed=123, output_type="pt", steps=STEPS, **kwargs):
    return pipe(x, generator=seeded(seed), num_inference_steps=steps, output_type=output_type, **kwargs).images


def refiner_calls(pipe, x, **kwargs) -> int:
    """How many steps ran (φ_r calls) for one untiled image ``x`` with ``run``'s settings."""
    calls = []
    hook = pipe.refiner.register_forward_hook(lambda *args: calls.append(1))
    try:
        run(pipe, x, **kwargs)
    finally:
        hook.remove()
    return len(calls)


def final_bar(err: str) -> str:
    """The progress bar's last state (the bar starts at T and shrinks when the adaptive start skips steps)."""
    return err.strip().split("\r")[-1]


def assert_state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


# ---------------------------------------------------------------------------------------------- save / load


def test_components_keys(pipe):
    assert set(pipe.components) == set(COMPONENT_ENTRIES)
    assert pipe.upscale_factor == S


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_save_load_round_trip_bit_exact(pipe, tmp_path, safe):
    pipe.save_pretrained(tmp_path, safe_serialization=safe)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["iter_diffusers_pipeline", "ITERPipeline"]
    # the components, and the pipeline's own settings (the default colour fix: none for converted weights)
    assert {k: v for k, v in index.items() if not k.startswith("_")} == COMPONENT_ENTRIES | {
        "color_fix": None, "color_fix_levels": 5, "num_inference_steps": 8}
    suffix = "safetensors" if safe else "bin"
    for name in ("vqvae", "encoder", "evaluator", "refiner"):
        assert (tmp_path / name / f"diffusion_pytorch_model.{suffix}").is_file()
        assert (tmp_path / name / "config.json").is_file()
    assert (tmp_path / "scheduler" / "scheduler_config.json").is_file()

    loaded = ITERPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    for name in ("vqvae", "encoder", "evaluator", "refiner"):
        assert not getattr(loaded, name).training
        assert_state_dicts_equal(getattr(pipe, name), getattr(loaded, name))
    assert dict(loaded.scheduler.config) == dict(pipe.scheduler.config)
    # Weights are bit-exact; outputs agree to float noise only, because CPU conv kernels depend on the alignment of
    # the weight buffers (safetensors memory-maps them, .bin allocates them), which shifts images by ~3e-6.
    x = image()
    assert torch.equal(run(pipe, x, output_type="latent"), run(loaded, x, output_type="latent"))
    assert (run(pipe, x) - run(loaded, x)).abs().max() <= 1e-5


def test_variant_fp16_and_incorrect_variant(pipe, tmp_path, converted_dir):
    pipe.to(torch.float16)  # variant only renames files: cast first
    pipe.save_pretrained(tmp_path, variant="fp16")
    for name in ("vqvae", "encoder", "evaluator", "refiner"):
        assert (tmp_path / name / "diffusion_pytorch_model.fp16.safetensors").is_file()
        assert not (tmp_path / name / "diffusion_pytorch_model.safetensors").exists()
    loaded = ITERPipeline.from_pretrained(tmp_path, variant="fp16", dtype=torch.float16)
    for name in ("vqvae", "encoder", "evaluator", "refiner"):
        assert getattr(loaded, name).dtype == torch.float16
        assert_state_dicts_equal(getattr(pipe, name), getattr(loaded, name))
    with pytest.raises(OSError, match="no file named"):
        ITERPipeline.from_pretrained(tmp_path)  # a variant-only folder needs variant=
    with pytest.raises(ValueError, match="variant=fp16"):
        ITERPipeline.from_pretrained(converted_dir, variant="fp16")  # no fp16 files there


def test_dtype_dict_loads_and_runs(converted_dir):
    pipe = ITERPipeline.from_pretrained(converted_dir, dtype={"refiner": torch.bfloat16, "default": torch.float32})
    pipe.set_progress_bar_config(disable=True)
    assert pipe.refiner.dtype == torch.bfloat16
    assert pipe.encoder.dtype == pipe.evaluator.dtype == pipe.vqvae.dtype == torch.float32
    out = run(pipe, image())
    assert out.shape == (1, 3, 16 * S, 16 * S) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1


# ---------------------------------------------------------------------------------------------- outputs


def test_dict_and_tuple_outputs_equal(pipe):
    x = image()
    out = pipe(x, generator=seeded(), num_inference_steps=STEPS, output_type="pt")
    tup = pipe(x, generator=seeded(), num_inference_steps=STEPS, output_type="pt", return_dict=False)
    assert isinstance(out, ITERPipelineOutput) and isinstance(tup, tuple)
    assert torch.equal(out.images, tup[0])
    assert out.intermediate_images is None and out.intermediate_masks is None


def test_output_types_agree(pipe):
    x = image(13, 10)
    pt = run(pipe, x, output_type="pt")
    np_out = run(pipe, x, output_type="np")
    pil = run(pipe, x, output_type="pil")
    latent = run(pipe, x, output_type="latent")
    assert pt.shape == (1, 3, 13 * S, 10 * S) and pt.dtype == torch.float32
    assert isinstance(np_out, np.ndarray) and np_out.shape == (1, 13 * S, 10 * S, 3) and np_out.dtype == np.float32
    np.testing.assert_array_equal(np_out, pt.permute(0, 2, 3, 1).numpy())
    assert isinstance(pil, list) and len(pil) == 1 and isinstance(pil[0], PIL.Image.Image)
    assert pil[0].size == (10 * S, 13 * S) and pil[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil[0]), (np_out[0] * 255).round().astype(np.uint8))
    # "latent": the final token ids of the padded input, (B, h, w) int64
    multiple, per_token = pipe.pad_multiple, pipe.encoder.pixels_per_token
    grid = ((13 // multiple + 1) * multiple // per_token, (10 // multiple + 1) * multiple // per_token)
    assert latent.dtype == torch.int64 and latent.shape == (1, *grid)
    assert 0 <= latent.min() and latent.max() < pipe.vqvae.config.num_vq_embeddings
    with torch.no_grad():
        decoded = pipe.vqvae.decode(latent).sample[..., : 13 * S, : 10 * S]
    assert (decoded - pt).abs().max() < 1e-6


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (7, 20), (13, 10), (16, 16), (33, 17)])
def test_any_size_gives_exact_output_size(pipe, size):
    h, w = size
    out = run(pipe, image(h, w), steps=2)
    assert out.shape == (1, 3, h * S, w * S)
    assert torch.isfinite(out).all()


def test_determinism_and_seed_dependence(pipe):
    x = image()
    a, b = run(pipe, x, seed=1, output_type="latent"), run(pipe, x, seed=1, output_type="latent")
    c = run(pipe, x, seed=2, output_type="latent")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(run(pipe, x, seed=1), run(pipe, x, seed=1))


# ---------------------------------------------------------------------------------------------- batches


def test_batch_equals_single_with_generator_list(pipe):
    x = image(batch=3, seed=5)
    gens = lambda: [seeded(11), seeded(12), seeded(13)]  # noqa: E731
    tokens = pipe(x, generator=gens(), num_inference_steps=STEPS, output_type="latent").images
    images = pipe(x, generator=gens(), num_inference_steps=STEPS, output_type="pt").images
    assert tokens.shape[0] == 3 and images.shape == (3, 3, 16 * S, 16 * S)
    for i in range(3):
        single_tokens = run(pipe, x[i : i + 1], seed=11 + i, output_type="latent")
        single_image = run(pipe, x[i : i + 1], seed=11 + i)
        assert torch.equal(tokens[i : i + 1], single_tokens)
        assert (images[i : i + 1] - single_image).abs().max() <= 1e-5
    assert not torch.equal(tokens[0], tokens[1])


def test_list_of_different_sizes(pipe):
    xs = [image(16, 16, seed=1), image(8, 12, seed=2), image(13, 10, seed=3)]
    out = pipe(xs, generator=[seeded(1), seeded(2), seeded(3)], num_inference_steps=STEPS, output_type="pt").images
    assert isinstance(out, list) and len(out) == 3
    for i, x in enumerate(xs):
        assert out[i].shape == (3, x.shape[2] * S, x.shape[3] * S)
        single = run(pipe, x, seed=i + 1)
        assert (out[i][None] - single).abs().max() <= 1e-5
    np_out = pipe(xs, generator=[seeded(1), seeded(2), seeded(3)], num_inference_steps=STEPS, output_type="np").images
    assert [a.shape for a in np_out] == [(64, 64, 3), (32, 48, 3), (52, 40, 3)]
    pil = pipe(xs, generator=[seeded(1), seeded(2), seeded(3)], num_inference_steps=STEPS, output_type="pil").images
    assert [p.size for p in pil] == [(64, 64), (48, 32), (40, 52)]


def test_generator_list_wrong_length_raises(pipe):
    with pytest.raises(ValueError, match="generators"):
        pipe(image(batch=3), generator=[seeded(1), seeded(2)], num_inference_steps=2)
    with pytest.raises(ValueError, match="generators"):
        pipe(image(), generator=[seeded(1)], num_images_per_prompt=2, num_inference_steps=2)
    with pytest.raises(TypeError, match="generator"):
        pipe(image(), generator=123, num_inference_steps=2)


def test_num_images_per_prompt(pipe):
    x = image()
    out = pipe(x, num_images_per_prompt=2, generator=[seeded(1), seeded(2)], num_inference_steps=STEPS,
               output_type="latent").images
    assert out.shape[0] == 2
    assert not torch.equal(out[0], out[1])
    assert torch.equal(out[0:1], run(pipe, x, seed=1, output_type="latent"))
    assert torch.equal(out[1:2], run(pipe, x, seed=2, output_type="latent"))
    # two inputs, two samples each: image-major order
    two = torch.cat([image(seed=1), image(seed=2)])
    pil = pipe(two, num_images_per_prompt=2, generator=seeded(), num_inference_steps=2, output_type="pil").images
    assert len(pil) == 4
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_images_per_prompt"):
            pipe(x, num_images_per_prompt=bad)


# ---------------------------------------------------------------------------------------------- inputs


def test_input_formats_give_the_same_result(pipe):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (13, 10, 3), dtype=np.uint8)
    as_float = rgb.astype(np.float32) / 255
    chw = torch.from_numpy(as_float).permute(2, 0, 1)
    inputs = {
        "pil_rgb": PIL.Image.fromarray(rgb),
        "numpy_uint8_hwc": rgb,
        "numpy_uint16_hwc": rgb.astype(np.uint16) * 257,
        "numpy_float_hwc": as_float,
        "numpy_float_bhwc": as_float[None],
        "numpy_float64_hwc": as_float.astype(np.float64),
        "torch_chw": chw,
        "torch_bchw": chw[None],
        "list_of_pil": [PIL.Image.fromarray(rgb)],
    }
    reference_tokens = run(pipe, chw[None], output_type="latent")
    reference = run(pipe, chw[None])
    for name, value in inputs.items():
        assert torch.equal(run(pipe, value, output_type="latent"), reference_tokens), name
        assert (run(pipe, value) - reference).abs().max() <= 1e-5, name

    # RGBA: the alpha channel is dropped
    alpha = rng.integers(0, 256, (13, 10, 1), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=2)
    assert torch.equal(run(pipe, PIL.Image.fromarray(rgba, "RGBA")), reference)
    assert torch.equal(run(pipe, rgba), reference)

    # grayscale: L images, HW arrays and 1-channel tensors are replicated to RGB
    gray = rng.integers(0, 256, (13, 10), dtype=np.uint8)
    gray_rgb = run(pipe, np.repeat(gray[..., None], 3, axis=2))
    assert torch.equal(run(pipe, PIL.Image.fromarray(gray, "L")), gray_rgb)
    assert torch.equal(run(pipe, gray), gray_rgb)
    assert torch.equal(run(pipe, torch.from_numpy(gray.astype(np.float32) / 255)[None]), gray_rgb)


BAD_INPUTS = {
    "empty_tensor": (torch.rand(1, 3, 0, 8), {}, ValueError, "empty"),
    "empty_batch": (torch.rand(0, 3, 8, 8), {}, ValueError, "empty"),
    "empty_list": ([], {}, ValueError, "empty"),
    "nan": (torch.full((1, 3, 8, 8), float("nan")), {}, ValueError, "NaN"),
    "inf": (torch.full((1, 3, 8, 8), float("inf")), {}, ValueError, "infinite"),
    "above_one": (torch.full((1, 3, 8, 8), 1.5), {}, ValueError, r"\[0, 1\]"),
    "minus_one_to_one": (torch.rand(1, 3, 8, 8) * 2 - 1, {}, ValueError, r"\[0, 1\]"),
    "numpy_float_above_one": (np.full((8, 8, 3), 255.0, np.float32), {}, ValueError, r"\[0, 1\]"),
    "int_tensor": (torch.randint(0, 255, (1, 3, 8, 8)), {}, TypeError, "floating point"),
    "numpy_int32": (np.zeros((8, 8, 3), np.int32), {}, TypeError, "dtype int32"),
    "string": ("picture.png", {}, TypeError, "type str"),
    "object": (object(), {}, TypeError, "type object"),
    "none": (None, {}, ValueError, "image is required"),
    "two_channels": (torch.rand(1, 2, 8, 8), {}, ValueError, "2 channels"),
    "five_channels": (torch.rand(5, 8, 8), {}, ValueError, "5 channels"),
    "five_dims": (torch.rand(1, 1, 3, 8, 8), {}, ValueError, "CHW or BCHW"),
    "bad_output_type": (torch.rand(1, 3, 8, 8), {"output_type": "numpy"}, ValueError, "output_type"),
    "tile_zero": (torch.rand(1, 3, 8, 8), {"tile_size": 0}, ValueError, "tile_size"),
    "tile_string": (torch.rand(1, 3, 8, 8), {"tile_size": "large"}, ValueError, "tile_size"),
    "tile_float": (torch.rand(1, 3, 8, 8), {"tile_size": 32.0}, ValueError, "tile_size"),
    "tile_bool": (torch.rand(1, 3, 8, 8), {"tile_size": True}, ValueError, "tile_size"),
    "tile_padding": (torch.rand(1, 3, 8, 8), {"tile_padding": -1}, ValueError, "tile_padding"),
    "steps_zero": (torch.rand(1, 3, 8, 8), {"num_inference_steps": 0}, ValueError, "num_inference_steps"),
    "token_temperature": (torch.rand(1, 3, 8, 8), {"token_temperature": 0.0}, ValueError, "token_temperature"),
    "mask_temperature": (torch.rand(1, 3, 8, 8), {"mask_temperature": -1.0}, ValueError, "mask_temperature"),
    "alpha_above_one": (torch.rand(1, 3, 8, 8), {"mask_threshold": 1.5}, ValueError, r"mask_threshold .* \[0, 1\]"),
    "alpha_negative": (torch.rand(1, 3, 8, 8), {"mask_threshold": -0.5}, ValueError, r"mask_threshold .* \[0, 1\]"),
    "alpha_string": (torch.rand(1, 3, 8, 8), {"mask_threshold": "0.7"}, ValueError, "mask_threshold"),
    "tile_batch_zero": (torch.rand(1, 3, 8, 8), {"tile_batch_size": 0}, ValueError, "tile_batch_size"),
    "per_prompt_zero": (torch.rand(1, 3, 8, 8), {"num_images_per_prompt": 0}, ValueError, "num_images_per_prompt"),
    "callback_names": (
        torch.rand(1, 3, 8, 8),
        {"callback_on_step_end": lambda p, i, t, kw: kw, "callback_on_step_end_tensor_inputs": ["prompt_embeds"]},
        ValueError,
        "prompt_embeds",
    ),
    "callback_not_callable": (torch.rand(1, 3, 8, 8), {"callback_on_step_end": 5}, TypeError, "callable"),
    "latents_float": (torch.rand(1, 3, 8, 8), {"latents": torch.zeros(1, 8, 8)}, TypeError, "integer"),
    "latents_shape": (
        torch.rand(1, 3, 8, 8), {"latents": torch.zeros(1, 4, 4, dtype=torch.long)}, ValueError, "shape"
    ),
    "latents_range": (
        torch.rand(1, 3, 8, 8), {"latents": torch.full((1, 8, 8), 64, dtype=torch.long)}, ValueError, "token ids"
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_raise_clear_errors(pipe, name):
    value, kwargs, error, match = BAD_INPUTS[name]
    with pytest.raises(error, match=match):
        pipe(value, **{"num_inference_steps": 2, "output_type": "pt", **kwargs})


def test_call_checks_take_keywords_only():
    """The checks live in another module: by keyword, no argument can land in another's place."""
    from iter_diffusers.pipelines.checks import check_call_arguments

    with pytest.raises(TypeError, match="positional"):
        check_call_arguments(1, "pt", None, 0, None, [], 1, None, None, None, None, 1, [])


def test_latents_replace_the_encoder_tokens(pipe):
    x = image()
    multiple = pipe.pad_multiple
    from iter_diffusers.pipelines.image_io import mirror_pad

    with torch.no_grad():
        s_l = pipe.encoder(mirror_pad(x, 2 * multiple, 2 * multiple)).logits.argmax(1)
    assert torch.equal(run(pipe, x, latents=s_l, output_type="latent"), run(pipe, x, output_type="latent"))
    other = torch.zeros_like(s_l)
    assert not torch.equal(run(pipe, x, latents=other, output_type="latent"), run(pipe, x, output_type="latent"))
    # one latent map per input is repeated for num_images_per_prompt
    two = pipe(x, latents=s_l, num_images_per_prompt=2, generator=[seeded(1), seeded(2)], num_inference_steps=STEPS,
               output_type="latent").images
    assert torch.equal(two[1:2], run(pipe, x, seed=2, output_type="latent"))


# ---------------------------------------------------------------------------------------------- callbacks


def test_callback_receives_requested_tensors_once_per_step(pipe):
    x = image(13, 10)
    seen = []

    def callback(p, i, t, kwargs):
        assert p is pipe
        seen.append((i, int(t), {k: (tuple(v.shape), v.dtype) for k, v in kwargs.items()}))
        return {}

    names = ["latents", "kept_mask", "condition_tokens", "trusted_mask"]
    plain = run(pipe, x)
    out = run(pipe, x, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=names)
    # once per step that runs: the last ones of the schedule (the adaptive start skips the first 2 here)
    ran = range(STEPS - 2, STEPS)
    assert [(i, t) for i, t, _ in seen] == [(i, STEPS - 1 - i) for i in ran]
    grid = (8, 8)
    for _, _, tensors in seen:
        assert set(tensors) == set(names)
        assert tensors["latents"] == ((1, *grid), torch.int64)
        assert tensors["condition_tokens"] == ((1, *grid), torch.int64)
        assert tensors["kept_mask"] == ((1, *grid), torch.float32)
        assert tensors["trusted_mask"] == ((1, *grid), torch.float32)
    assert torch.equal(out, plain)  # a callback that returns nothing changes nothing
    # default: only "latents"
    seen.clear()
    run(pipe, x, callback_on_step_end=callback)
    assert all(set(tensors) == {"latents"} for _, _, tensors in seen) and len(seen) == len(ran)


def test_steps_that_every_image_skips_are_not_steps(pipe, capsys):
    """α = 0: φ_e trusts every token of S_l, so every step is skipped: no φ_r call, no callback, no intermediate,
    and the progress bar counts no step (it used to count T and fire T callbacks with nothing happening)."""
    x = image(13, 10)
    calls, seen = [], []
    hook = pipe.refiner.register_forward_hook(lambda *args: calls.append(1))
    pipe.set_progress_bar_config(disable=False)
    capsys.readouterr()
    try:
        out = pipe(x, generator=seeded(), num_inference_steps=STEPS, mask_threshold=0.0, output_type="pt",
                   return_intermediates=True, callback_on_step_end=lambda p, i, t, kw: seen.append(i) or {})
    finally:
        hook.remove()
        pipe.set_progress_bar_config(disable=True)
    bar = capsys.readouterr().err
    assert calls == [] and seen == []
    assert out.intermediate_images == [] and out.intermediate_masks == []
    assert final_bar(bar).startswith("0it")  # tqdm's view of a bar of 0 steps
    # the result is S_l rendered, as before
    tokens = pipe.encoder(mirror_pad(x, *pipe.padded_size(13, 10))).logits.argmax(1)
    assert torch.equal(run(pipe, x, output_type="latent", mask_threshold=0.0), tokens)


def test_callback_zero_latents_at_last_step(pipe):
    x = image(13, 10)

    def zero_last(p, i, t, kwargs):
        if i == p.num_timesteps - 1:
            kwargs["latents"] = torch.zeros_like(kwargs["latents"])
        return kwargs

    tokens = run(pipe, x, callback_on_step_end=zero_last, output_type="latent")
    assert torch.equal(tokens, torch.zeros_like(tokens))
    out = run(pipe, x, callback_on_step_end=zero_last)
    with torch.no_grad():
        expected = pipe.vqvae.decode(torch.zeros_like(tokens)).sample[..., : 13 * S, : 10 * S]
    assert (out - expected).abs().max() < 1e-6


def test_callback_latents_feed_the_next_step(pipe):
    """Tokens replaced by a callback are what φ_e judges and φ_r refines next."""
    x = image()
    seen = {"evaluator": [], "refiner": []}
    hooks = [
        getattr(pipe, name).register_forward_pre_hook(
            lambda m, args, kwargs, name=name: seen[name].append(args[0].clone()), with_kwargs=True
        )
        for name in seen
    ]
    replaced = {}

    def replace(p, i, t, kwargs):
        if i == STEPS - 2:
            kwargs["latents"] = (kwargs["latents"] + 1) % 64
            replaced["tokens"] = kwargs["latents"].clone()  # the pipeline writes the next step into it in place
        return kwargs

    try:
        run(pipe, x, callback_on_step_end=replace, mask_threshold=1.0)  # nothing trusted: every step runs
    finally:
        for hook in hooks:
            hook.remove()
    assert len(seen["refiner"]) == STEPS
    assert torch.equal(seen["evaluator"][-1], replaced["tokens"])
    assert torch.equal(seen["refiner"][-1], replaced["tokens"])


def test_pipeline_callback_subclass(pipe):
    class ZeroTokensAtEnd(PipelineCallback):
        tensor_inputs = ["latents", "kept_mask"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            cutoff = int(pipeline.num_timesteps * self.config.cutoff_step_ratio) - 1
            assert set(callback_kwargs) == {"latents", "kept_mask"}
            if step_index == cutoff:
                callback_kwargs["latents"] = torch.zeros_like(callback_kwargs["latents"])
            return callback_kwargs

    tokens = run(pipe, image(), callback_on_step_end=ZeroTokensAtEnd(), output_type="latent")
    assert torch.equal(tokens, torch.zeros_like(tokens))

    class BadNames(PipelineCallback):
        tensor_inputs = ["prompt_embeds"]

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            return callback_kwargs

    with pytest.raises(ValueError, match="prompt_embeds"):
        run(pipe, image(), callback_on_step_end=BadNames())


def test_interrupt_and_num_timesteps(pipe):
    assert pipe.interrupt is False  # usable before the first call
    calls = []

    def stop(p, i, t, kwargs):
        calls.append(i)
        p._interrupt = True
        return kwargs

    run(pipe, image(), callback_on_step_end=stop)
    assert len(calls) == 1  # the first step that ran (the adaptive start skips the first ones here)
    assert pipe.interrupt is True
    assert pipe.num_timesteps == STEPS
    run(pipe, image())  # the next call starts uninterrupted
    assert pipe.interrupt is False


# ---------------------------------------------------------------------------------------------- devices, dtypes


def test_model_cpu_offload_twice_equals_plain(pipe):
    x = image()
    plain_tokens, plain = run(pipe, x, output_type="latent"), run(pipe, x)
    pipe.enable_model_cpu_offload(device="cpu")
    assert pipe._execution_device.type == "cpu"
    for name in ("encoder", "evaluator", "refiner", "vqvae"):
        hook = getattr(getattr(pipe, name), "_hf_hook", None)
        assert type(hook).__name__ == "CpuOffload", name
    # every model, the VQGAN included (it is used through decode(), not forward()), goes through its hook
    used = []
    for name in ("encoder", "evaluator", "refiner", "vqvae"):
        hook = getattr(pipe, name)._hf_hook
        hook.pre_forward = lambda module, *a, _orig=hook.pre_forward, _name=name, **k: (
            used.append(_name), _orig(module, *a, **k))[1]
    for _ in range(2):
        assert torch.equal(run(pipe, x, output_type="latent"), plain_tokens)
        assert (run(pipe, x) - plain).abs().max() <= 1e-5
    assert set(used) == {"encoder", "evaluator", "refiner", "vqvae"}
    pipe.maybe_free_model_hooks()
    assert (run(pipe, x) - plain).abs().max() <= 1e-5


def test_maybe_free_model_hooks_without_offload(pipe):
    pipe.maybe_free_model_hooks()  # a no-op without offload
    assert torch.equal(run(pipe, image()), run(pipe, image()))


def test_bf16_cpu_smoke(pipe, monkeypatch):
    pipe.to(torch.bfloat16)
    assert pipe.refiner.dtype == pipe.vqvae.dtype == torch.bfloat16
    dtypes = []
    real_multinomial = torch.multinomial

    def spy(probs, *args, **kwargs):
        dtypes.append(probs.dtype)
        return real_multinomial(probs, *args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", spy)
    out = run(pipe, image(13, 10))
    assert out.shape == (1, 3, 13 * S, 10 * S) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    assert dtypes and set(dtypes) == {torch.float32}  # sampling stays in fp32
    pil = run(pipe, image(13, 10), output_type="pil")
    assert pil[0].size == (10 * S, 13 * S)


# ---------------------------------------------------------------------------------------------- tiling


def _nearest_run(self, lq, generators, **kwargs):
    """A tile-independent stand-in for the model: nearest-neighbour upscaling."""
    tokens = torch.zeros(lq.shape[0], 1, 1, dtype=torch.long)
    return _RunResult(images=F.interpolate(lq, scale_factor=S, mode="nearest"), tokens=tokens)


def test_pt_outputs_are_on_the_execution_device_tiled_or_not(pipe, monkeypatch):
    """Tiles are assembled on the CPU; "pt" outputs still come back on the execution device (here: meta)."""
    monkeypatch.setattr(ITERPipeline, "_run", _nearest_run)
    monkeypatch.setattr(ITERPipeline, "_execution_device", property(lambda self: torch.device("meta")))
    for tile_size in (None, 16):
        out = pipe(image(20, 24), output_type="pt", tile_size=tile_size).images
        assert out.device.type == "meta" and out.shape == (1, 3, 20 * S, 24 * S)


def test_tiled_shape_and_progress(pipe, capsys):
    pipe.set_progress_bar_config(disable=False)
    capsys.readouterr()
    out = run(pipe, image(40, 48), steps=2, tile_size=32, tile_padding=8)
    assert out.shape == (1, 3, 40 * S, 48 * S)
    assert torch.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    # one bar over the steps that ran in the 4 tiles (of 2 each; φ_e judges each tile alone)
    bar = final_bar(capsys.readouterr().err)
    ran = int(bar.split("/")[0].split("|")[-1])
    assert 0 < ran <= 8 and f"{ran}/{ran}" in bar


def test_batched_tiles_do_not_depend_on_the_batch_size(pipe, monkeypatch):
    """Tiles run as batches of one shape; each batched tile has its own generator seeded from the image's, so the
    result is the same whatever the batch size. One tile per run keeps the official shared stream instead."""
    x = image(48, 48)
    shapes = []
    real_run = ITERPipeline._run

    def spy(self, lq, generators, **kwargs):
        shapes.append(tuple(lq.shape))
        return real_run(self, lq, generators, **kwargs)

    monkeypatch.setattr(ITERPipeline, "_run", spy)
    outs = {n: run(pipe, x, steps=2, tile_size=16, tile_padding=4, tile_batch_size=n) for n in (2, 3, 9)}
    for n in (3, 9):  # batched kernels round differently (~3e-6); one different token would move pixels by ~0.1
        torch.testing.assert_close(outs[n], outs[2], atol=1e-5, rtol=0)
    # 3x3 tiles of 16x16 with 4 pixels of context: 4 corners (20x20), 2+2 edges (20x24, 24x20), 1 interior
    # (24x24); with batches of 9, each kind is one run
    assert sorted((s[0], s[2:]) for s in shapes[-4:]) == [(1, (24, 24)), (2, (20, 24)), (2, (24, 20)),
                                                           (4, (20, 20))]
    shared = run(pipe, x, steps=2, tile_size=16, tile_padding=4, tile_batch_size=1)
    assert (shared - outs[2]).abs().max() > 1e-2  # another random stream: other tokens
    assert torch.equal(shared, run(pipe, x, steps=2, tile_size=16, tile_padding=4))  # 1 is the default


def test_auto_tiles_count_narrow_models_as_32_wide(pipe, monkeypatch):
    """Below 32 channels at the output resolution, what does not narrow (token logits, the engine's buffers)
    dominates a run's memory (measured on the bundled 16-wide model), so a narrower model is planned as 32-wide."""
    config = pipe.vqvae.config
    own_width = max(config.base_channels * m for m in config.channel_multipliers[:2])
    assert own_width < 32 and pipe.activation_bytes_per_pixel() == 6 * 32 * 4 * pipe.upscale_factor**2
    monkeypatch.setattr(tiling, "MIN_ESTIMATED_WIDTH", 1)
    assert pipe.activation_bytes_per_pixel() == 6 * own_width * 4 * pipe.upscale_factor**2


def test_auto_tiles_share_the_budget_when_batched(pipe, monkeypatch):
    per_pixel = pipe.activation_bytes_per_pixel()
    monkeypatch.setattr(tiling, "AUTO_TILE_BUDGET", 4 * 64 * 64 * per_pixel)
    single = pipe.auto_tile_shape(120, 140, 4)
    batched = pipe.auto_tile_shape(120, 140, 4, tile_batch_size=4)
    assert batched[0] * batched[1] < single[0] * single[1]
    run_h, run_w = pipe.padded_size(min(batched[0] + 8, 120), min(batched[1] + 8, 140))
    assert 4 * run_h * run_w <= 4 * 64 * 64


def test_tiled_blend_lies_between_the_tiles(pipe, monkeypatch):
    """Blended pixels are convex combinations of the overlapping tile outputs; single-tile areas are untouched."""
    tiles = []
    real_run = ITERPipeline._run

    def recording_run(self, lq, *args, **kwargs):
        result = real_run(self, lq, *args, **kwargs)
        tiles.append(result.images.cpu())
        return result

    monkeypatch.setattr(ITERPipeline, "_run", recording_run)
    h, w, tile, pad = 40, 48, 32, 8
    x = image(h, w, seed=4)
    blended = run(pipe, x, steps=2, tile_size=tile, tile_padding=pad)
    blended_tiles, tiles[:] = list(tiles), []
    pasted = run(pipe, x, steps=2, tile_size=tile, tile_padding=pad, tile_blending=False)
    assert len(blended_tiles) == len(tiles) == 4
    assert all(torch.equal(a, b) for a, b in zip(blended_tiles, tiles))  # same tile results in both modes

    lo = torch.full((1, 3, h * S, w * S), float("inf"))
    hi = torch.full((1, 3, h * S, w * S), float("-inf"))
    count = torch.zeros(1, 1, h * S, w * S)
    index = 0
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            py0, px0 = max(y0 - pad, 0), max(x0 - pad, 0)
            py1, px1 = min(y0 + tile + pad, h), min(x0 + tile + pad, w)
            region = (..., slice(py0 * S, py1 * S), slice(px0 * S, px1 * S))
            t = tiles[index]
            index += 1
            assert t.shape[2:] == ((py1 - py0) * S, (px1 - px0) * S)
            lo[region] = torch.minimum(lo[region], t)
            hi[region] = torch.maximum(hi[region], t)
            count[region] += 1
    assert torch.all(blended >= lo - 1e-5) and torch.all(blended <= hi + 1e-5)
    single = (count == 1).expand_as(blended)
    assert single.any() and (count > 1).any()
    assert (blended[single] - pasted[single]).abs().max() < 1e-5
    # at the seams the two modes differ: blending really mixes tiles there
    assert not torch.allclose(blended, pasted, atol=1e-3)


@pytest.mark.parametrize("size,tile,pad", [((37, 45), 16, 4), ((40, 48), 32, 8), ((20, 33), 4, 8), ((9, 70), 8, 0)])
def test_tiled_blending_is_seamless(pipe, monkeypatch, size, tile, pad):
    monkeypatch.setattr(ITERPipeline, "_run", _nearest_run)
    x = image(*size, seed=7)
    untiled = run(pipe, x, tile_size=None)
    assert torch.equal(untiled, F.interpolate(x, scale_factor=S, mode="nearest"))
    blended = run(pipe, x, tile_size=tile, tile_padding=pad)
    pasted = run(pipe, x, tile_size=tile, tile_padding=pad, tile_blending=False)
    assert (blended - untiled).abs().max() < 1e-6
    assert torch.equal(pasted, untiled)


@pytest.mark.parametrize("length,tile,pad", [(72, 32, 8), (68, 32, 8), (45, 16, 4), (40, 16, 8), (33, 32, 16)])
def test_blend_weights_sum_to_one(length, tile, pad):
    """Across the tiles covering each output pixel the ramp weights sum to 1 (tile ≥ 2·padding)."""
    total = torch.zeros(length * S)
    for c0 in range(0, length, tile):
        c1 = min(c0 + tile, length)
        p0, p1 = max(c0 - pad, 0), min(c1 + pad, length)
        ramp = _overlap_ramp(p0, p1, c0, c1, length, pad, S)
        assert ramp.min() >= 0 and ramp.max() <= 1
        total[p0 * S : p1 * S] += ramp
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


def test_auto_tiling(pipe, monkeypatch):
    calls = []
    real_tiled = ITERPipeline._run_tiled

    def spy(self, lq, generator, tile_size, *args, **kwargs):
        calls.append((tuple(lq.shape[2:]), tile_size))
        return real_tiled(self, lq, generator, tile_size, *args, **kwargs)

    monkeypatch.setattr(ITERPipeline, "_run_tiled", spy)
    x = image(24, 20)
    assert torch.equal(run(pipe, x, steps=2), run(pipe, x, steps=2, tile_size=None))  # "auto" is the default
    assert calls == []
    # an input whose run would exceed the memory budget is tiled into the fewest equal tiles that fit
    # (with a stand-in model: no real compute)
    monkeypatch.setattr(ITERPipeline, "_run", _nearest_run)
    per_pixel = pipe.activation_bytes_per_pixel()
    monkeypatch.setattr(tiling, "AUTO_TILE_BUDGET", 64 * 64 * per_pixel)
    big = torch.rand(1, 3, 60, 70, generator=torch.Generator().manual_seed(0))
    out = run(pipe, big, steps=1, tile_padding=4)
    shape = pipe.auto_tile_shape(60, 70, 4)
    assert calls == [((60, 70), shape)]
    rows, cols = math.ceil(60 / shape[0]), math.ceil(70 / shape[1])
    assert rows * cols > 1
    for tile in ((shape[0], shape[1]), (math.ceil(60 / rows), math.ceil(70 / cols))):  # every run fits the budget
        run_h, run_w = pipe.padded_size(min(tile[0] + 8, 60), min(tile[1] + 8, 70))
        assert run_h * run_w <= 64 * 64
    # and no other shape with fewer tiles fits
    for r in range(1, rows * cols):
        for c in range(1, rows * cols // r + 1):
            if r * c < rows * cols:
                run_h, run_w = pipe.padded_size(min(math.ceil(60 / r) + 8, 60), min(math.ceil(70 / c) + 8, 70))
                assert run_h * run_w > 64 * 64
    assert out.shape == (1, 3, 60 * S, 70 * S)
    assert (out - F.interpolate(big, scale_factor=S, mode="nearest")).abs().max() < 1e-6
    assert pipe.auto_tile_shape(20, 20, 4) is None  # fits: not tiled


@pytest.mark.parametrize("situation", ["short", "plenty", "unknown"])
def test_the_tiling_plan_and_the_image_do_not_depend_on_the_machine(pipe, monkeypatch, caplog, situation):
    """The same call gives the same image whatever memory the machine has free (it used to tile by free memory)
    and whatever the dtype; where the memory is short it says so, naming a tile_size that fits, and changes
    nothing; where it is plenty or unknown it says nothing."""
    per_pixel = pipe.activation_bytes_per_pixel()
    monkeypatch.setattr(tiling, "AUTO_TILE_BUDGET", 40 * 40 * per_pixel)  # 24×20 runs whole, 60×70 tiles
    x, big = image(24, 20), image(60, 70, seed=1)
    reference = run(pipe, x, steps=2), run(pipe, big, steps=2, tile_padding=4)
    plan = pipe.auto_tile_shape(60, 70, 4)
    assert plan is not None and pipe.auto_tile_shape(24, 20, 4) is None
    available = {"short": 600 * per_pixel, "plenty": 64 * 2**30, "unknown": None}[situation]  # 600: below any run
    monkeypatch.setattr(tiling, "available_memory", lambda device: available)
    with caplog.at_level("WARNING"):
        again = run(pipe, x, steps=2), run(pipe, big, steps=2, tile_padding=4)
    assert pipe.auto_tile_shape(60, 70, 4) == plan
    assert all(torch.equal(a, b) for a, b in zip(reference, again))
    warned = [r.getMessage() for r in caplog.records if "may run out of memory" in r.getMessage()]
    if situation != "short":
        assert not warned
    else:
        assert len(warned) == 2
        for message, padding in zip(warned, (16, 4)):
            side = int(message.split("tile_size=")[1].split(" ")[0])
            assert math.prod(pipe.padded_size(side + 2 * padding, side + 2 * padding)) * per_pixel <= available \
                or side == pipe.pad_multiple  # the smallest tile, when none fits
    pipe.to(dtype=torch.bfloat16)
    assert pipe.auto_tile_shape(60, 70, 4) == plan  # the plan is taken at fp32, whatever the dtype


def test_the_suggested_tile_is_the_largest_that_fits(pipe):
    for max_pixels in (600, 2000, 10_000, 100_000):
        side = pipe.fitting_tile_size(max_pixels, 4)
        fits = lambda s: math.prod(pipe.padded_size(s + 8, s + 8)) <= max_pixels  # noqa: E731
        assert side % pipe.pad_multiple == 0 and (fits(side) or side == pipe.pad_multiple)
        assert not fits(side + pipe.pad_multiple)


def test_available_memory_takes_memavailable_and_the_cgroup_limit(monkeypatch):
    monkeypatch.setattr(tiling, "_meminfo_available", lambda: 8 * 2**30)
    files = {"/sys/fs/cgroup/memory.max": 3 * 2**30, "/sys/fs/cgroup/memory.current": 2**30}
    monkeypatch.setattr(tiling, "_read_int", files.get)
    assert tiling.available_memory(torch.device("cpu")) == 2 * 2**30  # the cgroup's headroom is the smaller
    files["/sys/fs/cgroup/memory.max"] = None  # "max": no limit
    assert tiling.available_memory(torch.device("cpu")) == 8 * 2**30
    if Path("/proc/meminfo").exists():
        assert tiling._meminfo_available() > 0


def test_tiling_rejects_intermediates_latents_and_latent_output(pipe):
    x = image()
    with pytest.raises(ValueError, match="return_intermediates"):
        pipe(x, tile_size=8, return_intermediates=True)
    with pytest.raises(ValueError, match="latent"):
        pipe(x, tile_size=8, output_type="latent")
    with pytest.raises(ValueError, match="latents"):
        pipe(x, tile_size=8, latents=torch.zeros(1, 16, 16, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- intermediates


@pytest.mark.parametrize("output_type", ["pt", "np"])
def test_return_intermediates(pipe, output_type):
    x = image(13, 10)
    out = pipe(x, generator=seeded(), num_inference_steps=STEPS, output_type=output_type, return_intermediates=True)
    ran = refiner_calls(pipe, x)
    assert 0 < ran < STEPS  # the adaptive start skips some steps here, and they have no entry
    assert len(out.intermediate_images) == ran and len(out.intermediate_masks) == ran
    final = out.images if output_type == "pt" else torch.from_numpy(out.images)
    last = out.intermediate_images[-1]
    last = last if output_type == "pt" else torch.from_numpy(last)
    assert torch.equal(last, final)
    plain = run(pipe, x, output_type=output_type)
    plain = plain if output_type == "pt" else torch.from_numpy(plain)
    assert torch.equal(plain, final)  # asking for intermediates does not change the result

    counts = []
    for masks in out.intermediate_masks:
        assert len(masks) == 1 and masks[0].shape == (8, 8)
        assert set(masks[0].unique().tolist()) <= {0.0, 1.0}
        counts.append(int(masks[0].sum()))
    assert all(a <= b for a, b in zip(counts, counts[1:])), counts
    assert counts[-1] > counts[0]  # later steps keep more
    for a, b in zip(out.intermediate_masks, out.intermediate_masks[1:]):
        assert torch.all(b[0] >= a[0])  # a kept position stays kept


def test_return_intermediates_latent(pipe):
    x = image()
    out = pipe(x, generator=seeded(), num_inference_steps=STEPS, output_type="latent", return_intermediates=True)
    assert len(out.intermediate_images) == refiner_calls(pipe, x)
    assert all(t.dtype == torch.int64 and t.shape == out.images.shape for t in out.intermediate_images)
    assert torch.equal(out.intermediate_images[-1], out.images)


def test_return_intermediates_batch_of_different_sizes(pipe):
    xs = [image(16, 16, seed=1), image(8, 12, seed=2)]
    out = pipe(xs, generator=[seeded(1), seeded(2)], num_inference_steps=3, output_type="pt",
               return_intermediates=True)
    # separate runs (different sizes): the steps that ran for either image, an image that skips one unchanged
    ran = [refiner_calls(pipe, x, seed=n + 1, steps=3) for n, x in enumerate(xs)]
    assert len(out.intermediate_images) == max(ran)
    for step_images in out.intermediate_images:
        assert [t.shape for t in step_images] == [(3, 64, 64), (3, 32, 48)]
    assert all(torch.equal(a, b) for a, b in zip(out.intermediate_images[-1], out.images))
    assert [m.shape for m in out.intermediate_masks[0]] == [(16, 16), (8, 8)]


# ---------------------------------------------------------------------------------------------- progress bar


def test_progress_bar_config(pipe, capsys):
    capsys.readouterr()
    run(pipe, image(), steps=3)
    assert "3/3" not in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=False)
    run(pipe, image(), steps=3)
    ran = refiner_calls(pipe, image(), steps=3)
    assert f"{ran}/{ran}" in final_bar(capsys.readouterr().err)
    pipe.set_progress_bar_config(disable=True)
    run(pipe, image(), steps=3)
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------- components


def _with(pipe, component, change) -> dict:
    """The pipeline's components with one rebuilt from its config plus ``change`` (random weights)."""
    parts = dict(pipe.components)
    original = parts[component]
    torch.manual_seed(0)
    parts[component] = type(original).from_config({**original.config, **change})
    return parts


# Each kept rule, the pair that violates it, and how that pair fails when the rule is bypassed: every refusal
# names a configuration that cannot run (or cannot give an s× image), never one the official code runs.
VIOLATIONS = {
    "encoder ids beyond φ_e": ("encoder", {"num_vq_embeddings": 128},
                               "encoder.num_vq_embeddings = 128 but evaluator.num_vq_embeddings = 64", IndexError),
    "refiner ids beyond φ_e": ("refiner", {"num_vq_embeddings": 128, "out_channels": 128},
                               "refiner.num_vq_embeddings = 128 but evaluator.num_vq_embeddings = 64", IndexError),
    "ids beyond the codebook": ("vqvae", {"num_vq_embeddings": 32}, "but vqvae.num_vq_embeddings = 32", IndexError),
    "token size": ("encoder", {"vq_scale_factor": 16}, "encoder.vq_scale_factor = 16 but the vqvae upsamples by 8",
                   "not 4x"),
    "one-way evaluator": ("evaluator", {"out_channels": 1}, "evaluator scores", IndexError),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_each_kept_component_rule_refuses_a_pair_that_cannot_run(pipe, monkeypatch, violation):
    component, change, message, failure = VIOLATIONS[violation]
    parts = _with(pipe, component, change)
    with pytest.raises(ValueError, match=message):
        ITERPipeline(**parts)
    monkeypatch.setattr(pipeline_iter, "check_components", lambda *args: None)
    unchecked = ITERPipeline(**parts)
    unchecked.set_progress_bar_config(disable=True)
    x = image(40, 40)
    if failure == "not 4x":  # tokens of 4 LQ pixels rendered as 8 HQ pixels: a 2× image, cut short
        out = run(unchecked, x, mask_threshold=1.0, color_fix="none")
        assert out.shape[-2:] != (40 * S, 40 * S)
    else:
        with pytest.raises(failure):
            run(unchecked, x, mask_threshold=1.0)  # α = 1: φ_r runs every step


@pytest.mark.parametrize("component,change", [
    ("vqvae", {"swin_window_size": 4}),  # the official VQGAN's window is its own; E_l, φ_e and φ_r use 8
    ("evaluator", {"swin_window_size": 4}),
    ("refiner", {"swin_window_size": 2}),
    ("vqvae", {"num_vq_embeddings": 128}),  # a larger codebook than the ids E_l and φ_r emit
])
def test_legal_unusual_pairs_are_accepted_and_run(pipe, component, change):
    unusual = ITERPipeline(**_with(pipe, component, change))
    unusual.set_progress_bar_config(disable=True)
    assert unusual.token_window == 8 and unusual.pad_multiple == pipe.pad_multiple
    out = run(unusual, image(20, 28), mask_threshold=1.0)
    assert out.shape == (1, 3, 20 * S, 28 * S) and torch.isfinite(out).all()


def test_windows_that_do_not_divide_e_ls_pad_to_their_common_multiple(pipe):
    """A VQGAN window of 16 (or 12) on E_l's 8: the token grid is padded to the least common multiple, which is the
    official padding on every input whose official grid is such a multiple, and runs on the others too."""
    for window, multiple in ((16, 16), (12, 24)):
        unusual = ITERPipeline(**_with(pipe, "vqvae", {"swin_window_size": window}))
        unusual.set_progress_bar_config(disable=True)
        assert unusual.token_window == multiple and unusual.pad_multiple == multiple * 2
        out = run(unusual, image(20, 40), mask_threshold=1.0)
        assert out.shape == (1, 3, 20 * S, 40 * S)
        for side in range(1, 200):
            official = (side // pipe.pad_multiple + 1) * pipe.pad_multiple  # E_l's own multiple, as officially
            if official % unusual.pad_multiple == 0:  # where the official code can run this VQGAN
                assert unusual.padded_size(side, side)[0] == official


def test_refiner_needs_its_mask_token():
    from iter_diffusers import ITERRefinementTransformer

    with pytest.raises(ValueError, match="use_mask_token=True"):
        ITERRefinementTransformer(num_vq_embeddings=16, out_channels=16, use_mask_token=False)
    with pytest.raises(ValueError, match="out_channels = 16"):
        ITERRefinementTransformer(num_vq_embeddings=16, out_channels=2)


# ---------------------------------------------------------------------------------------------- the denoising loop


def test_call_docstring_has_an_example_and_returns():
    doc = ITERPipeline.__call__.__doc__
    assert pipeline_iter.EXAMPLE_DOC_STRING.strip() in doc  # replace_example_docstring filled the placeholder
    assert ">>> result = pipe(image, generator=" in doc
    returns = doc.split("Returns:")[1]
    assert "ITERPipelineOutput" in returns and "tuple" in returns


def test_the_loop_drives_the_scheduler_as_a_stepper(pipe, monkeypatch):
    """Every step: the scheduler prepares the step's keep-mask, φ_r runs on the executing images, and
    ``scheduler.step`` performs that timestep's transition on the whole batch; an image that skips the step
    passes through it unchanged while the other image of its batch is refined."""
    scheduler = pipe.scheduler
    monkeypatch.setattr(scheduler, "start_steps", lambda trusted: torch.tensor([0, 2])[: len(trusted)])
    calls = []

    def recording(name):
        real = getattr(scheduler, name)

        def record(*args, **kwargs):
            out = real(*args, **kwargs)
            if name == "step":
                model_output, timestep, sample = args[:3]
                calls.append((name, int(timestep), model_output.shape[0], sample.shape[0]))
            elif name == "prepare_keep_mask":
                calls.append((name, int(args[1])))
            else:
                calls.append((name,))
            return out

        monkeypatch.setattr(scheduler, name, record)

    for name in ("set_timesteps", "set_trusted_mask", "prepare_keep_mask", "step"):
        recording(name)
    x = image(batch=2, seed=3)
    out = pipe(x, generator=[seeded(1), seeded(2)], num_inference_steps=STEPS, output_type="latent",
               return_intermediates=True)
    expected = [("set_timesteps",), ("set_trusted_mask",)]
    for i in range(STEPS):
        t = STEPS - 1 - i
        expected += [("prepare_keep_mask", t), ("step", t, 1 if i < 2 else 2, 2)]
    assert calls == expected
    from iter_diffusers.pipelines.image_io import mirror_pad

    with torch.no_grad():
        lq_tokens = pipe.encoder(mirror_pad(x, *pipe.padded_size(16, 16))).logits.argmax(1)  # S_l
    for i in range(2):  # image 1 skips steps 0 and 1: its map stays S_l while image 0 is refined
        assert torch.equal(out.intermediate_images[i][1], lq_tokens[1])
        assert not torch.equal(out.intermediate_images[i][0], lq_tokens[0])
    single = pipe(x[:1], generator=seeded(1), num_inference_steps=STEPS, output_type="latent").images
    assert torch.equal(out.images[:1], single)  # per image exact
