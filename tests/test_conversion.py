"""Conversion of official checkpoints: full-size layouts (from the release key manifests), both checkpoint
forms, and refusal of bad files by the CLI."""

import collections
import functools
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iter_diffusers import ITERPipeline
from iter_diffusers.conversion import ConversionError, convert_official_checkpoints
from iter_diffusers.models.swin import relative_position_index, shifted_window_mask
from iter_diffusers.pipelines.hub_code import HUB_MODELS_MODULE, HUB_PIPELINE_MODULE, HUB_SCHEDULER_MODULE

SCRIPT = Path(__file__).parents[1] / "scripts" / "convert_weights.py"


def _random_state(manifest: dict, generator: torch.Generator) -> dict:
    """Random tensors with the manifest's shapes; buffers get their true values, aliases share tensors."""
    state = {}
    for key, shape in manifest.items():
        if key.endswith("relative_position_index"):
            state[key] = relative_position_index(int(math.isqrt(shape[0])))
        elif key.endswith("attn_mask"):
            window = math.isqrt(shape[1])
            side = math.isqrt(shape[0]) * window
            state[key] = shifted_window_mask(side, side, window, window // 2).clone()
        elif key.startswith("generator."):
            continue
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.02
    for key in manifest:
        if key.startswith("generator."):
            state[key] = state["decoder." + key[len("generator."):]]
    return state


@pytest.fixture(scope="module")
def full_size_files(official_dir, tmp_path_factory):
    """Full-size random checkpoints in every official form: VQGAN, x4 and x2 with and without vqgan.* keys."""
    root = tmp_path_factory.mktemp("full")
    g = torch.Generator().manual_seed(0)
    vq_manifest = json.loads((official_dir / "swinvqgan_keys.json").read_text())
    vq = _random_state(vq_manifest, g)
    torch.save({"params": vq}, root / "swinvqgan.pth")
    files = {"vqgan": root / "swinvqgan.pth"}
    for scale in (2, 4):
        manifest = json.loads((official_dir / f"iter_x{scale}_keys.json").read_text())
        own = _random_state({k: v for k, v in manifest.items() if not k.startswith("vqgan.")}, g)
        with_vq = dict(own, **{"vqgan." + k: v for k, v in vq.items()})
        assert set(with_vq) == set(manifest)
        torch.save({"params": with_vq}, root / f"x{scale}_full.pth")
        torch.save({"params_ema": own}, root / f"x{scale}_stripped.pth")
        files[f"x{scale}_full"] = root / f"x{scale}_full.pth"
        files[f"x{scale}_stripped"] = root / f"x{scale}_stripped.pth"
    return files


@pytest.mark.parametrize("scale", [2, 4])
def test_full_size_release_layout_converts_strictly(full_size_files, scale):
    pipe = convert_official_checkpoints(full_size_files["vqgan"], full_size_files[f"x{scale}_full"])
    assert pipe.encoder.config.scale_factor == scale
    vq, enc = pipe.vqvae.config, pipe.encoder.config
    assert (vq.base_channels, tuple(vq.channel_multipliers), vq.latent_channels, vq.num_vq_embeddings) == (128, (1, 2, 2, 4), 128, 512)
    assert (vq.swin_dim, vq.swin_depth, vq.swin_num_groups, vq.swin_window_size, vq.swin_num_heads) == (256, 6, 1, 8, 8)
    assert (enc.base_channels, enc.feature_dim, enc.swin_num_groups, enc.swin_depth) == (64, 128, 2, 6)
    for net, out in ((pipe.evaluator, 2), (pipe.refiner, 512)):
        assert (net.config.hidden_dim, net.config.swin_num_groups, net.config.swin_depth, net.config.out_channels) == (256, 4, 6, out)
    counts = {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in ("vqvae", "encoder", "evaluator", "refiner")}
    # The official networks' parameter counts (counted on the official code's modules); encoder and quantizer included.
    assert counts["vqvae"] == 71_103_843
    assert counts["encoder"] == {4: 4_140_512, 2: 6_814_432}[scale]
    assert counts["evaluator"] == 25_972_930 and counts["refiner"] == 26_104_256
    # Spot-check that values landed where they belong.
    official = torch.load(full_size_files[f"x{scale}_full"], weights_only=True)["params"]
    assert torch.equal(pipe.refiner.code_embedding.weight, official["token_refine_net.token_refine_net.code_emb.weight"][:, :, 0, 0].t())
    assert torch.equal(pipe.vqvae.decoder.conv_out.weight, official["vqgan.decoder.blocks.16.weight"])
    assert torch.equal(pipe.vqvae.decoder.up[3].resnets[0].conv_shortcut.weight, official["vqgan.decoder.blocks.13.conv_out.weight"])


def test_both_checkpoint_forms_give_the_same_weights(full_size_files):
    full = convert_official_checkpoints(full_size_files["vqgan"], full_size_files["x4_full"])
    stripped = convert_official_checkpoints(full_size_files["vqgan"], full_size_files["x4_stripped"])
    for name in ("encoder", "evaluator", "refiner", "vqvae"):
        a, b = getattr(full, name).state_dict(), getattr(stripped, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_vqgan_copy_that_differs_is_refused(full_size_files, tmp_path):
    state = torch.load(full_size_files["x4_full"], weights_only=True)["params"]
    state["vqgan.quantize.embedding.weight"] = state["vqgan.quantize.embedding.weight"] + 1
    torch.save({"params": state}, tmp_path / "bad.pth")
    with pytest.raises(ConversionError, match="do not belong together"):
        convert_official_checkpoints(full_size_files["vqgan"], tmp_path / "bad.pth")


# ---------------------------------------------------------------------------------------- the CLI
def _cli(*args):
    """Run scripts/convert_weights.py in a fresh interpreter, exactly as a user does."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def _cli_in_process(capsys, *args):
    """The same script's main() in this process (the interpreter start-up costs ~8 s per call)."""
    spec = importlib.util.spec_from_file_location("convert_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_cli_converts_and_the_folder_loads(official_dir, tmp_path):
    out = tmp_path / "tiny"
    result = _cli("--vqgan_checkpoint", official_dir / "tiny_swinvqgan.pth", "--iter_checkpoint",
                  official_dir / "tiny_iter_x4.pth", "--output_dir", out, "--dtype", "bfloat16")
    assert result.returncode == 0, result.stderr
    card = (out / "README.md").read_text()
    assert "pipeline_tag: image-to-image" in card and "cc-by-nc-sa-4.0" in card and "S-Lab" in card
    assert "DiffusionPipeline.from_pretrained(" in card and "trust_remote_code=True" in card  # plain diffusers
    assert "ITERPipeline.from_pretrained(" in card  # and the package
    assert (out / "refiner" / "diffusion_pytorch_model.bf16.safetensors").is_file()
    pipe = ITERPipeline.from_pretrained(out, variant="bf16", dtype=torch.bfloat16)
    assert pipe.refiner.dtype == torch.bfloat16
    # the folder names its components after the code files it carries (pipelines/hub_code.py)
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == [HUB_PIPELINE_MODULE, "ITERPipeline"]
    assert index["vqvae"] == [HUB_MODELS_MODULE, "ITERVQModel"]
    assert index["encoder"] == [HUB_MODELS_MODULE, "ITERDistortionRemovalEncoder"]
    assert index["evaluator"] == [HUB_MODELS_MODULE, "ITERTokenEvaluator"]
    assert index["refiner"] == [HUB_MODELS_MODULE, "ITERRefinementTransformer"]
    assert index["scheduler"] == [HUB_SCHEDULER_MODULE, "MaskedTokenScheduler"]
    assert (out / "vqvae" / f"{HUB_MODELS_MODULE}.py").is_file()


def test_cli_accepts_the_with_vqgan_form_and_generator_free_vqgan(official_dir, tmp_path, capsys):
    vq = torch.load(official_dir / "tiny_swinvqgan.pth", weights_only=True)["params"]
    own = torch.load(official_dir / "tiny_iter_x4.pth", weights_only=True)["params"]
    torch.save({"params": dict(own, **{"vqgan." + k: v for k, v in vq.items()})}, tmp_path / "iter.pth")
    torch.save({"params_ema": {k: v for k, v in vq.items() if not k.startswith("generator.")}}, tmp_path / "vq.pth")
    result = _cli_in_process(capsys, "--vqgan_checkpoint", tmp_path / "vq.pth", "--iter_checkpoint", tmp_path / "iter.pth",
                  "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr


def _bad_files(official_dir, tmp_path):
    vq_path, iter_path = official_dir / "tiny_swinvqgan.pth", official_dir / "tiny_iter_x4.pth"
    vq = torch.load(vq_path, weights_only=True)["params"]
    own = torch.load(iter_path, weights_only=True)["params"]
    (tmp_path / "truncated.pth").write_bytes(iter_path.read_bytes()[:50_000])
    (tmp_path / "text.pth").write_text("not a checkpoint")
    torch.save({"params": collections.OrderedDict(a=functools.partial(print))}, tmp_path / "pickle.pth")
    torch.save({"state_dict": own}, tmp_path / "foreign.pth")
    torch.save({"params": {k: v for k, v in own.items() if "token_crit_net.conv_out" not in k}}, tmp_path / "missing.pth")
    torch.save({"params": dict(own, extra_key=torch.zeros(1))}, tmp_path / "extra.pth")
    torch.save({"params": {k: v for k, v in vq.items() if not k.startswith("decoder.blocks.3")}}, tmp_path / "vq_missing.pth")
    wrong_gen = dict(vq)
    wrong_gen["generator.blocks.0.weight"] = wrong_gen["generator.blocks.0.weight"] + 1
    torch.save({"params": wrong_gen}, tmp_path / "vq_alias.pth")
    bad_buffer = dict(own)
    key = next(k for k in own if k.endswith("relative_position_index"))
    bad_buffer[key] = bad_buffer[key].flip(0)
    torch.save({"params": bad_buffer}, tmp_path / "bad_buffer.pth")
    small_vq = dict(vq, **{"quantize.embedding.weight": vq["quantize.embedding.weight"][:32]})
    torch.save({"params": small_vq}, tmp_path / "vq_small_codebook.pth")
    return {
        "truncated ITER file": (vq_path, tmp_path / "truncated.pth", "not a PyTorch checkpoint (or corrupt)"),
        "text file": (vq_path, tmp_path / "text.pth", "not a PyTorch checkpoint (or corrupt)"),
        "foreign pickle": (vq_path, tmp_path / "pickle.pth", "not a PyTorch checkpoint of tensors (it pickles"),
        "foreign dict": (vq_path, tmp_path / "foreign.pth", "not an official ITER checkpoint"),
        "missing keys": (vq_path, tmp_path / "missing.pth", "missing key"),
        "unexpected key": (vq_path, tmp_path / "extra.pth", "unexpected keys"),
        "VQGAN missing a block": (tmp_path / "vq_missing.pth", iter_path, "VQGAN"),
        "generator alias differs": (tmp_path / "vq_alias.pth", iter_path, "generator.* alias differs"),
        "corrupt buffer": (vq_path, tmp_path / "bad_buffer.pth", "relative-position index"),
        "mismatched codebook": (tmp_path / "vq_small_codebook.pth", iter_path, "codebook has 32"),
        "files swapped": (iter_path, vq_path, "not a Swin-VQGAN checkpoint"),
        "no such file": (tmp_path / "absent.pth", iter_path, "no such file"),
    }


def test_cli_refuses_bad_checkpoints_without_traceback_or_output(official_dir, tmp_path, capsys):
    for n, (name, (vq, iter_file, message)) in enumerate(_bad_files(official_dir, tmp_path).items()):
        out = tmp_path / f"out-{name.replace(' ', '_')}"
        run = _cli if n == 0 else functools.partial(_cli_in_process, capsys)  # one real process, the rest in-process
        result = run("--vqgan_checkpoint", vq, "--iter_checkpoint", iter_file, "--output_dir", out)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (name, result.stderr)
        assert result.stderr.startswith("error: ") and message in result.stderr, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (name, result.stderr)
        assert "weights_only" not in result.stderr, (name, result.stderr)  # never advise loading unsafely
        assert not out.exists(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "staging folders were left behind"


def test_cli_overwrite_replaces_only_pipeline_folders(official_dir, tmp_path, capsys, monkeypatch):
    args = ["--vqgan_checkpoint", official_dir / "tiny_swinvqgan.pth", "--iter_checkpoint",
            official_dir / "tiny_iter_x4.pth", "--output_dir"]
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    for extra in ([], ["--overwrite"]):  # a folder of other files: refused with or without --overwrite
        result = _cli_in_process(capsys, *args, out, *extra)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert (out / "keep.txt").read_text() == "precious" and not (out / "model_index.json").exists()
    assert "no model_index.json" in result.stderr
    pipeline = tmp_path / "pipeline"
    assert _cli_in_process(capsys, *args, pipeline).returncode == 0
    (pipeline / "stale.txt").write_text("from the previous conversion")
    assert _cli_in_process(capsys, *args, pipeline).returncode == 2  # a pipeline, but no --overwrite
    assert _cli_in_process(capsys, *args, pipeline, "--overwrite").returncode == 0
    assert not (pipeline / "stale.txt").exists() and (pipeline / "model_index.json").is_file()
    # the current directory (even one that holds a pipeline), its parents and home are never replaced
    monkeypatch.chdir(pipeline)
    for protected in (Path("."), pipeline.parent, Path.home()):
        result = _cli_in_process(capsys, *args, protected, "--overwrite")
        assert result.returncode == 2 and "never replaces" in result.stderr, (protected, result.stderr)
    assert (pipeline / "model_index.json").is_file()


