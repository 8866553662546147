"""The official tensors of each network mapped onto ours: the Swin-VQGAN, E_l, φ_e and φ_r.

Every configuration value is read off the tensors, every key is consumed exactly once, persistent buffers
(relative-position indices, shifted-window masks) are recomputed and compared, and the targets load strictly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from diffusers.models.resnet import ResnetBlock2D

from ..models import ITERDistortionRemovalEncoder, ITERVQModel
from ..models.swin import SwinLayers, relative_position_index, shifted_window_mask
from .state_dicts import ConversionError, StateDict, indices, load_strict, require, take


# ---------------------------------------------------------------------------------------------- Swin layers
def _swin_config(state: StateDict, where: str) -> dict:
    """Swin settings of a ``SwinLayers`` sub-dict (keys ``conv_in.*``, ``swin_blks.*``, ``conv_out.*``)."""
    groups = indices(state, r"swin_blks\.(\d+)\.")
    depth = indices(state, r"swin_blks\.0\.residual_group\.blocks\.(\d+)\.")
    if not groups or not depth:
        raise ConversionError(f"{where}: no Swin blocks found")
    block = "swin_blks.0.residual_group.blocks.0."
    table = require(state, block + "attn.relative_position_bias_table", where)
    window = (math.isqrt(table.shape[0]) + 1) // 2
    if (2 * window - 1) ** 2 != table.shape[0]:
        raise ConversionError(f"{where}: relative-position table of {table.shape[0]} rows is not (2w-1)^2")
    dim = require(state, "conv_in.weight", where).shape[0]
    hidden = require(state, block + "mlp.fc1.weight", where).shape[0]
    return dict(
        dim=dim, num_groups=len(groups), depth=len(depth), num_heads=table.shape[1],
        window_size=window, mlp_ratio=hidden / dim, shift_windows=_has_shifted_blocks(state, depth),
    )


def _has_shifted_blocks(state: StateDict, depth: list[int]) -> bool:
    """Whether the odd blocks shift their windows. SwinIR stores a shift mask in every shifted block; it shifts
    none (and clamps the window to the map) when its configured map is no larger than the window. A checkpoint
    without the persistent buffers cannot tell: it is taken as the usual alternation."""
    if len(depth) < 2 or not any(k.endswith("attn.relative_position_index") for k in state):
        return True
    return any(re.search(r"\.blocks\.\d*[13579]\.attn_mask$", k) for k in state)


def _swin_fields(swin: dict) -> dict:
    """The Swin entries of our model configs, from :func:`_swin_config`."""
    return dict(swin_num_groups=swin["num_groups"], swin_depth=swin["depth"], swin_num_heads=swin["num_heads"],
                swin_window_size=swin["window_size"], mlp_ratio=swin["mlp_ratio"])


def _shifting(swin: dict, where: str) -> dict:
    """E_l's and φ's Swin settings, which always shift (the official code builds them for a 32×32 map, window 8)."""
    if not swin["shift_windows"]:
        raise ConversionError(f"{where}: Swin blocks without shifted windows are only supported in the VQGAN")
    return swin


def _check_swin_buffers(state: StateDict, where: str, window: int) -> None:
    """Pop the persistent buffers of the Swin blocks after checking that they equal what we recompute."""
    expected_index = relative_position_index(window)
    for key in [k for k in state if k.endswith("attn.relative_position_index")]:
        if not torch.equal(state.pop(key).long(), expected_index):
            raise ConversionError(f"{where}: {key} differs from the recomputed relative-position index")
    for key in [k for k in state if k.endswith(".attn_mask")]:
        mask = state.pop(key).float()
        # made for the configured map, which need not be square: one of the layouts of its windows must match
        num_windows = mask.shape[0]
        layouts = [(rows, num_windows // rows) for rows in range(1, num_windows + 1) if num_windows % rows == 0]
        if mask.shape[1:] != (window * window, window * window) or not any(
            torch.equal(mask, shifted_window_mask(rows * window, cols * window, window, window // 2))
            for rows, cols in layouts
        ):
            raise ConversionError(f"{where}: {key} differs from the recomputed shifted-window mask")


def _swin_key(key: str) -> str:
    key = re.sub(r"^swin_blks\.(\d+)\.residual_group\.blocks\.", r"groups.\1.blocks.", key)
    key = re.sub(r"^swin_blks\.(\d+)\.conv\.", r"groups.\1.conv.", key)
    return key.replace(".mlp.attn.", ".mlp.gate.")


# ---------------------------------------------------------------------------------------------- VQGAN
def _classify_vq_block(state: StateDict, i: int) -> str:
    if f"blocks.{i}.norm1.weight" in state:
        return "resnet"
    if f"blocks.{i}.swin_blks.0.conv.weight" in state:
        return "swin"
    if f"blocks.{i}.conv.weight" in state:
        return "resample"
    weight = state.get(f"blocks.{i}.weight")
    if weight is None:
        raise ConversionError(f"VQGAN: block {i} has no recognisable parameters")
    return "conv" if weight.ndim == 4 else "norm"


def _vq_module_order(model: ITERVQModel) -> tuple[list[str], list[str]]:
    """Our module paths inside encoder / decoder, in the order of the official flat ``blocks`` lists."""
    encoder = ["conv_in"]
    for s, stage in enumerate(model.encoder.down):
        encoder += [f"down.{s}.resnets.{j}" for j in range(len(stage.resnets))]
        encoder += [f"down.{s}.downsample"] if stage.downsample is not None else []
    encoder += ["mid.resnet_in", "mid.swin", "mid.resnet_out", "norm_out", "conv_out"]
    decoder = ["conv_in", "mid.resnet_in", "mid.swin", "mid.resnet_out"]
    for s, stage in enumerate(model.decoder.up):
        decoder += [f"up.{s}.resnets.{j}" for j in range(len(stage.resnets))]
        decoder += [f"up.{s}.upsample"] if stage.upsample is not None else []
    decoder += ["norm_out", "conv_out"]
    return encoder, decoder


def infer_vqgan_config(encoder: StateDict, quantize_weight: torch.Tensor) -> dict:
    """The :class:`ITERVQModel` config that the official ``encoder.*`` tensors (prefix stripped) describe."""
    kinds = [_classify_vq_block(encoder, i) for i in indices(encoder, r"blocks\.(\d+)\.")]
    if kinds[:1] != ["conv"] or "swin" not in kinds:
        raise ConversionError("VQGAN: encoder blocks do not look like the official Swin-VQGAN encoder")
    base = encoder["blocks.0.weight"].shape[0]
    levels = kinds.count("resample") + 1
    first_down = kinds.index("resample") if "resample" in kinds else kinds.index("swin") - 1
    layers = first_down - 1
    widths = []
    position = 1
    for _ in range(levels):
        widths.append(encoder[f"blocks.{position + layers - 1}.conv2.weight"].shape[0])
        position += layers + 1
    swin_index = kinds.index("swin")
    swin = _swin_config({k.split(".", 2)[2]: v for k, v in encoder.items() if k.startswith(f"blocks.{swin_index}.")},
                        "VQGAN encoder")
    return dict(
        in_channels=encoder["blocks.0.weight"].shape[1],
        out_channels=3,
        base_channels=base,
        channel_multipliers=[w // base for w in widths],
        layers_per_block=layers,
        latent_channels=quantize_weight.shape[1],
        num_vq_embeddings=quantize_weight.shape[0],
        swin_dim=swin["dim"],
        swin_shift_windows=swin["shift_windows"],
        **_swin_fields(swin),
    )


def _rename_blocks(part: StateDict, order: list[str], module: torch.nn.Module, where: str) -> StateDict:
    """Official ``blocks.{i}.rest`` -> our ``{order[i]}.rest`` (consumes ``part``)."""
    renamed = {}
    for key in list(part):
        match = re.match(r"blocks\.(\d+)\.(.+)", key)
        if not match or int(match.group(1)) >= len(order):
            raise ConversionError(f"{where}: unexpected key {key!r}")
        target, rest = order[int(match.group(1))], match.group(2)
        target_module = module.get_submodule(target)
        if isinstance(target_module, ResnetBlock2D):  # the official 1x1 shortcut is its conv_out
            rest = rest.replace("conv_out.", "conv_shortcut.")
        elif isinstance(target_module, SwinLayers):
            rest = _swin_key(rest)
        renamed[f"{target}.{rest}"] = part.pop(key)
    return renamed


def convert_vqgan(state: StateDict) -> ITERVQModel:
    """Build an :class:`ITERVQModel` from the official Swin-VQGAN state dict (consumed)."""
    encoder = take(state, "encoder.")
    decoder = take(state, "decoder.")
    generator = take(state, "generator.")
    quantize = take(state, "quantize.")
    if not encoder or not decoder or "embedding.weight" not in quantize:
        raise ConversionError(
            "VQGAN: expected encoder.*, decoder.* and quantize.embedding.weight (is this ITER_swinvqgan.pth?)"
        )
    if generator and (
        generator.keys() != decoder.keys() or any(not torch.equal(generator[k], decoder[k]) for k in decoder)
    ):
        raise ConversionError("VQGAN: the generator.* alias differs from decoder.*")
    unexpected = sorted(state) + [f"quantize.{k}" for k in quantize if k != "embedding.weight"]
    if unexpected:
        raise ConversionError(f"VQGAN: {len(unexpected)} unexpected keys, e.g. {unexpected[0]!r}")
    config = infer_vqgan_config(encoder, quantize["embedding.weight"])
    model = ITERVQModel(**config)
    encoder_order, decoder_order = _vq_module_order(model)
    weights = {"quantize.embedding.weight": quantize.pop("embedding.weight")}
    for name, part, order in (("encoder", encoder, encoder_order), ("decoder", decoder, decoder_order)):
        _check_swin_buffers(part, f"VQGAN {name}", config["swin_window_size"])
        renamed = _rename_blocks(part, order, getattr(model, name), f"VQGAN {name}")
        weights.update({f"{name}.{k}": v for k, v in renamed.items()})
    load_strict(model, weights, "VQGAN")
    return model


# ---------------------------------------------------------------------------------------------- E_l
def convert_lq_encoder(part: StateDict, num_vq_embeddings: int) -> ITERDistortionRemovalEncoder:
    """E_l from the official ``lq_encoder.model.*`` tensors (prefix stripped; consumed)."""
    where = "E_l (lq_encoder)"
    layer_ids = indices(part, r"(\d+)\.")
    stages = [i for i in layer_ids if f"{i}.0.weight" in part]
    if not layer_ids or layer_ids[0] != 0 or stages != list(range(1, len(stages) + 1)):
        raise ConversionError(f"{where}: layout does not match the official LQEncoder")
    proj, swin_at, out = len(stages) + 1, len(stages) + 2, len(stages) + 3
    blocks = indices(part, r"1\.(\d+)\.conv\.0\.norm\.weight") if stages else []
    swin_part = {k[len(f"{swin_at}.") :]: v for k, v in part.items() if k.startswith(f"{swin_at}.")}
    swin = _swin_config(swin_part, where)
    logits = require(part, f"{out}.weight", where)
    if logits.shape[0] != num_vq_embeddings:
        raise ConversionError(
            f"{where}: predicts {logits.shape[0]} codes but the VQGAN codebook has {num_vq_embeddings} "
            "(checkpoints from different models?)"
        )
    config = dict(
        scale_factor=8 // 2 ** len(stages),
        vq_scale_factor=8,
        in_channels=require(part, "0.weight", where).shape[1],
        base_channels=part["0.weight"].shape[0],
        blocks_per_stage=len(blocks),
        feature_dim=require(part, f"{proj}.weight", where).shape[0],
        **_swin_fields(_shifting(swin, where)),
        num_vq_embeddings=num_vq_embeddings,
    )
    _check_swin_buffers(part, where, swin["window_size"])
    renames: list[tuple[str, Callable[[str], str]]] = [(r"0\.", lambda m: "conv_in.")]
    for s in stages:
        renames.append((rf"{s}\.0\.", lambda m, s=s: f"down.{s - 1}.conv."))
        renames.append(
            (rf"{s}\.(\d+)\.conv\.([0235])\.(?:norm\.)?",
             lambda m, s=s: f"down.{s - 1}.resnets.{int(m.group(1)) - 1}."
             + {"0": "norm1.", "2": "conv1.", "3": "norm2.", "5": "conv2."}[m.group(2)])
        )
    renames += [(rf"{proj}\.", lambda m: "proj_in."), (rf"{swin_at}\.", lambda m: "swin."), (rf"{out}\.", lambda m: "conv_out.")]
    weights = {}
    for key in list(part):
        for pattern, target in renames:
            match = re.match(pattern, key)
            if match:
                rest = key[match.end() :]
                new = target(match) + rest
                weights[_swin_key_in(new, "swin.")] = part.pop(key)
                break
        else:
            raise ConversionError(f"{where}: unexpected key lq_encoder.model.{key}")
    model = ITERDistortionRemovalEncoder(**config)
    load_strict(model, weights, where)
    return model


def _swin_key_in(key: str, prefix: str) -> str:
    return prefix + _swin_key(key[len(prefix) :]) if key.startswith(prefix) else key


# ---------------------------------------------------------------------------------------------- φ_e / φ_r
def convert_token_network(part: StateDict, cls: type, num_vq_embeddings: int, where: str, condition_first: bool):
    """φ_e or φ_r from the official ``SwinModel`` tensors (prefix stripped; consumed).

    ``condition_first``: the official network received the condition S_l as its first input (φ_r does).
    """
    code_emb = require(part, "code_emb.weight", where)
    inputs = code_emb.shape[1]
    if inputs not in (num_vq_embeddings, num_vq_embeddings + 1):
        raise ConversionError(f"{where}: embeds {inputs} codes but the VQGAN codebook has {num_vq_embeddings}")
    swin_part = {k[len("swin_layers.") :]: v for k, v in part.items() if k.startswith("swin_layers.")}
    swin = _swin_config(swin_part, where)
    config = dict(
        num_vq_embeddings=num_vq_embeddings,
        out_channels=require(part, "conv_out.2.weight", where).shape[0],
        use_mask_token=inputs == num_vq_embeddings + 1,
        hidden_dim=code_emb.shape[0],
        **_swin_fields(_shifting(swin, where)),
    )
    _check_swin_buffers(part, where, swin["window_size"])
    official_names = {
        "combine.weight": "combine.weight",
        "conv_out.0.weight": "norm_out.weight",
        "conv_out.0.bias": "norm_out.bias",
        "conv_out.2.weight": "conv_out.weight",
        "conv_out.2.bias": "conv_out.bias",
    }
    # A bias-free 1×1 conv on one-hot maps is an embedding lookup: (hidden, K, 1, 1) -> (K, hidden).
    weights = {"code_embedding.weight": part.pop("code_emb.weight")[:, :, 0, 0].t().contiguous()}
    for official, ours in official_names.items():
        weights[ours] = require(part, official, where)
        del part[official]
    combine = weights["combine.weight"][:, :, 0, 0]
    if condition_first:
        # Our networks concatenate (map, condition); the official φ_r gets (condition, map), φ_e (map, condition).
        hidden = combine.shape[0]
        combine = torch.cat([combine[:, hidden:], combine[:, :hidden]], dim=1)
    weights["combine.weight"] = combine.contiguous()
    for key in [k for k in part if k.startswith("swin_layers.")]:
        weights["swin." + _swin_key(key[len("swin_layers.") :])] = part.pop(key)
    if part:
        raise ConversionError(f"{where}: unexpected key {sorted(part)[0]!r}")
    model = cls(**config)
    load_strict(model, weights, where)
    return model
