"""The OpenVINO engine (``--engine openvino``, auto on CPUs without native bf16): exact against torch fp32.

Needs ``pip install 'iter-diffusers[openvino]'`` (the README's test command installs it); without OpenVINO every
test here skips and says so.
"""

import pytest
import torch

from conftest import seeded
from iter_diffusers import ITERPipeline
from iter_diffusers.pipelines import openvino_engine
from iter_diffusers.pipelines.openvino_engine import OPENVINO_NETWORKS, openvino_available, use_openvino

# Checked without importing OpenVINO: imported while pytest collects (its output captured), it broke a later
# test's output capture (test_cli_app) and the run.
pytestmark = pytest.mark.skipif(not openvino_available(),
                                reason="OpenVINO is not installed: pip install 'iter-diffusers[openvino]'")


@pytest.fixture()
def ov_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(openvino_engine, "cache_dir", lambda: tmp_path / "openvino")
    return tmp_path / "openvino"


def _pair(converted_dir):
    pipes = []
    for _ in range(2):
        pipe = ITERPipeline.from_pretrained(converted_dir)
        pipe.set_progress_bar_config(disable=True)
        pipes.append(pipe)
    return pipes


def test_openvino_matches_torch_fp32_at_every_size(converted_dir, ov_cache):
    """One conversion serves every size (dynamic shapes); images within 1e-4, tokens, masks and steps equal."""
    torch_pipe, ov_pipe = _pair(converted_dir)
    use_openvino(ov_pipe)
    for h, w in ((16, 16), (40, 48), (13, 57)):
        x = torch.rand(1, 3, h, w, generator=seeded(h))
        kwargs = dict(num_inference_steps=4, mask_threshold=0.7, output_type="pt", tile_size=None,
                      return_intermediates=True)
        ours, theirs = (p(x, generator=seeded(), **kwargs) for p in (ov_pipe, torch_pipe))
        assert (ours.images - theirs.images).abs().max().item() <= 1e-4
        assert len(ours.intermediate_masks) == len(theirs.intermediate_masks) > 0
        for a, b in zip(ours.intermediate_masks, theirs.intermediate_masks):
            assert torch.equal(a[0], b[0])
        tokens = [p(x, generator=seeded(), num_inference_steps=4, mask_threshold=0.7, output_type="latent").images
                  for p in (ov_pipe, torch_pipe)]
        assert torch.equal(*tokens)
    assert len(list(ov_cache.glob("*/*.xml"))) == 4  # one IR per network, whatever the sizes


def test_each_input_shape_runs_its_own_static_compile(converted_dir, ov_cache, monkeypatch):
    """A call runs the IR compiled for its exact shapes (so OpenVINO plans and reuses its buffers); the last few
    shapes stay compiled, and every one gives torch's output."""
    import openvino

    pipe = ITERPipeline.from_pretrained(converted_dir)
    network = openvino_engine._CompiledNetwork(openvino_engine._ir_path(pipe, "decoder"), openvino.Core(),
                                               release_memory=True)
    monkeypatch.setattr(openvino_engine, "_SHAPES_KEPT", 2)
    side, channels = pipe.token_window * 2, pipe.vqvae.config.latent_channels
    for n, (h, w) in enumerate([(side, side), (side, 2 * side), (2 * side, side), (side, side)]):
        z = torch.randn(1, channels, h, w, generator=seeded(n))
        with torch.no_grad():
            torch.testing.assert_close(network(z), pipe.vqvae.decoder(z), atol=1e-4, rtol=0)
    assert list(network.compiled) == [((1, channels, 2 * side, side),), ((1, channels, side, side),)]
    for shapes, model in network.compiled.items():
        assert [tuple(port.get_partial_shape().to_shape()) for port in model.inputs] == list(shapes)


def test_converted_networks_are_cached_by_weights_and_version(converted_dir, ov_cache, monkeypatch):
    first, second = _pair(converted_dir)
    before = set(ov_cache.glob("*/*.xml"))
    notices = []
    use_openvino(first, notify=notices.append)
    saved = sorted(p.parent.name for p in ov_cache.glob("*/*.xml"))
    converted = {p.stem for p in set(ov_cache.glob("*/*.xml")) - before}
    # each conversion is announced before it starts (a large model's take minutes)
    assert [n.split()[1] for n in notices] == [n for n in OPENVINO_NETWORKS if n in converted]

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    import openvino

    monkeypatch.setattr(openvino, "convert_model", no_conversion)
    use_openvino(second, notify=notices.append)  # the same weights: read from the cache, silently
    assert len(notices) == len(converted)
    x = torch.rand(1, 3, 16, 16, generator=seeded(0))
    torch.testing.assert_close(first(x, generator=seeded(), output_type="pt").images,
                               second(x, generator=seeded(), output_type="pt").images, atol=0, rtol=0)
    monkeypatch.undo()
    monkeypatch.setattr(openvino_engine, "cache_dir", lambda: ov_cache)
    changed = ITERPipeline.from_pretrained(converted_dir)
    with torch.no_grad():
        changed.refiner.conv_out.bias += 1  # other weights: another key, converted anew
    use_openvino(changed, ("refiner",), notify=notices.append)
    assert len(list(ov_cache.glob("*/*.xml"))) == len(saved) + 1
    assert notices[-1].startswith("converting refiner to OpenVINO, once for these weights")
    monkeypatch.setattr(openvino, "__version__", "0.0.0-other")  # another OpenVINO: another key too
    assert openvino_engine._cache_key(first.refiner, dict(first.refiner.config), "refiner") not in saved


def test_the_cache_key_ignores_diffusers_private_config_entries(converted_dir):
    """The same network loaded from another folder, or built in another process (diffusers'
    ``_use_default_values`` list comes from a set, so its order changes), keeps its key."""
    first, second = _pair(converted_dir)
    second.refiner.register_to_config(_name_or_path="/elsewhere",
                                      _use_default_values=["b", "a"], _class_name="ITERRefinementTransformer")
    keys = [openvino_engine._cache_key(p.refiner, openvino_engine._component_config(p, "refiner"), "refiner")
            for p in (first, second)]
    assert keys[0] == keys[1]
    second.refiner.register_to_config(swin_depth=second.refiner.config.swin_depth + 1)  # an architecture entry
    assert openvino_engine._cache_key(second.refiner, openvino_engine._component_config(second, "refiner"),
                                      "refiner") != keys[0]


def test_the_engine_refuses_what_it_cannot_run(converted_dir, ov_cache):
    pipe = ITERPipeline.from_pretrained(converted_dir)
    with pytest.raises(ValueError, match="unknown networks"):
        use_openvino(pipe, ("vqvae",))
    pipe.refiner.to(torch.bfloat16)
    with pytest.raises(ValueError, match="refiner is torch.bfloat16 on cpu"):
        use_openvino(pipe, ("refiner",))
    assert not list(ov_cache.glob("*/*.xml"))


def test_a_missing_openvino_is_named_with_its_install_command(converted_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'iter-diffusers\[openvino\]'"):
        use_openvino(ITERPipeline.from_pretrained(converted_dir))


def test_iter_sr_engine_openvino_gives_the_float32_picture(converted_dir, ov_cache, tmp_path):
    """``iter-sr --engine openvino`` names its mode and writes the picture of ``--dtype float32`` (8-bit equal
    but for rounding at a level boundary)."""
    import contextlib
    import io

    import numpy as np
    import PIL.Image

    from iter_diffusers.cli.upscale import main

    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(
        tmp_path / "in.png")
    outputs = {}
    for engine, extra in (("openvino", []), ("torch", ["--dtype", "float32"])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            assert main(["-i", str(tmp_path / "in.png"), "-o", str(tmp_path / engine), "--model", str(converted_dir),
                         "--engine", engine, "--steps", "2", *extra]) == 0
        if engine == "openvino":
            assert "computing in float32 on OpenVINO" in err.getvalue()
            # a fresh cache: each network's one-off conversion is announced before it starts
            assert all(f"converting {name} to OpenVINO" in err.getvalue() for name in OPENVINO_NETWORKS)
        outputs[engine] = np.asarray(PIL.Image.open(tmp_path / engine / "in_x4.png")).astype(int)
    assert np.abs(outputs["openvino"] - outputs["torch"]).max() <= 1
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        assert main(["-i", str(tmp_path / "in.png"), "-o", str(tmp_path / "again"), "--model", str(converted_dir),
                     "--engine", "openvino", "--steps", "2"]) == 0
    assert "converting" not in err.getvalue()  # cached: nothing to announce
