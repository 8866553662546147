"""Conversion of the official ITER release checkpoints into an :class:`ITERPipeline`.

The official files are ``{'params': state_dict}`` (or ``'params_ema'``) pickles:

* ``ITER_swinvqgan.pth``: the Swin-VQGAN, ``encoder.*``, ``decoder.*``, ``quantize.embedding.weight`` and the
  ``generator.*`` alias of the decoder (``VQModel.generator = self.decoder``);
* ``ITER_x4.pth`` / ``ITER_x2.pth``: ``lq_encoder.model.*`` (E_l), ``token_refine_net.token_crit_net.*`` (φ_e),
  ``token_refine_net.token_refine_net.*`` (φ_r), and possibly a copy of the VQGAN under ``vqgan.*`` (the
  official ``save_network(except_key=...)`` does not drop it).

Every configuration value is read off the tensors, every key is consumed exactly once, persistent buffers
(relative-position indices, shifted-window masks) are recomputed and compared, and the targets load strictly.
Any problem raises :class:`ConversionError` with a one-line message.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from .models import ITERDistortionRemovalEncoder, ITERRefinementTransformer, ITERTokenEvaluator, ITERVQModel
from .models.swin import relative_position_index, shifted_window_mask

StateDict = dict[str, torch.Tensor]

#: Where the official release files are downloaded from (``ITER_RELEASE_URL`` overrides it, see :mod:`.official`).
OFFICIAL_RELEASE_URL = "https://github.com/chaofengc/ITER/releases/download/v0.1.0/"
VQGAN_RELEASE_FILE = "ITER_swinvqgan.pth"
ITER_RELEASE_FILES = {4: "ITER_x4.pth", 2: "ITER_x2.pth"}

PHI_E_PREFIX = "token_refine_net.token_crit_net."
PHI_R_PREFIX = "token_refine_net.token_refine_net."
LQ_PREFIX = "lq_encoder.model."


class ConversionError(ValueError):
    """An official checkpoint is unreadable, incomplete, inconsistent or not an ITER checkpoint."""


# ---------------------------------------------------------------------------------------------- reading
def load_official_checkpoint(path: str | Path) -> StateDict:
    """Read an official ``.pth`` safely (``weights_only=True``) and return its ``params_ema`` or ``params``."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, random bytes, an empty file, a pickle of arbitrary objects ...
        # Never echo PyTorch's advice to load with weights_only=False: that would run the file's code.
        if isinstance(error, pickle.UnpicklingError) and "Unsupported global" in str(error):
            raise ConversionError(f"{path}: not a PyTorch checkpoint of tensors (it pickles other objects)") from None
        raise ConversionError(f"{path}: not a PyTorch checkpoint (or corrupt)") from None
    if not isinstance(checkpoint, dict) or not ({"params", "params_ema"} & checkpoint.keys()):
        raise ConversionError(f"{path}: not an official ITER checkpoint (expected a dict with 'params' or 'params_ema')")
    # The official VQModel prefers params_ema when present.
    state = checkpoint["params_ema"] if "params_ema" in checkpoint else checkpoint["params"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: its 'params' entry is not a state dict of tensors")
    return {k: v.detach().cpu() for k, v in state.items()}


def _take(state: StateDict, prefix: str) -> StateDict:
    """Remove and return every entry under ``prefix`` (prefix stripped)."""
    keys = [k for k in state if k.startswith(prefix)]
    return {k[len(prefix) :]: state.pop(k) for k in keys}


def _indices(state: StateDict, pattern: str) -> list[int]:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return sorted(found)


def _require(state: StateDict, key: str, where: str) -> torch.Tensor:
    if key not in state:
        raise ConversionError(f"{where}: missing key {key!r} (truncated or not an ITER checkpoint?)")
    return state[key]


# ---------------------------------------------------------------------------------------------- Swin layers
def _swin_config(state: StateDict, where: str) -> dict:
    """Swin settings of a ``SwinLayers`` sub-dict (keys ``conv_in.*``, ``swin_blks.*``, ``conv_out.*``)."""
    groups = _indices(state, r"swin_blks\.(\d+)\.")
    depth = _indices(state, r"swin_blks\.0\.residual_group\.blocks\.(\d+)\.")
    if not groups or not depth:
        raise ConversionError(f"{where}: no Swin blocks found")
    block = "swin_blks.0.residual_group.blocks.0."
    table = _require(state, block + "attn.relative_position_bias_table", where)
    window = (math.isqrt(table.shape[0]) + 1) // 2
    if (2 * window - 1) ** 2 != table.shape[0]:
        raise ConversionError(f"{where}: relative-position table of {table.shape[0]} rows is not (2w-1)^2")
    dim = _require(state, "conv_in.weight", where).shape[0]
    hidden = _require(state, block + "mlp.fc1.weight", where).shape[0]
    return dict(
        dim=dim, num_groups=len(groups), depth=len(depth), num_heads=table.shape[1],
        window_size=window, mlp_ratio=hidden / dim,
    )


def _swin_fields(swin: dict) -> dict:
    """The Swin entries of our model configs, from :func:`_swin_config`."""
    return dict(swin_num_groups=swin["num_groups"], swin_depth=swin["depth"], swin_num_heads=swin["num_heads"],
                swin_window_size=swin["window_size"], mlp_ratio=swin["mlp_ratio"])


def _check_swin_buffers(state: StateDict, where: str, window: int) -> None:
    """Pop the persistent buffers of the Swin blocks after checking that they equal what we recompute."""
    expected_index = relative_position_index(window)
    for key in [k for k in state if k.endswith("attn.relative_position_index")]:
        if not torch.equal(state.pop(key).long(), expected_index):
            raise ConversionError(f"{where}: {key} differs from the recomputed relative-position index")
    for key in [k for k in state if k.endswith(".attn_mask")]:
        mask = state.pop(key).float()
        side = math.isqrt(mask.shape[0]) * window  # the official masks are made for square maps
        expected = shifted_window_mask(side, side, window, window // 2)
        if mask.shape != expected.shape or not torch.equal(mask, expected):
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
    kinds = [_classify_vq_block(encoder, i) for i in _indices(encoder, r"blocks\.(\d+)\.")]
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
        kind = type(module.get_submodule(target)).__name__
        if kind == "ResnetBlock":
            rest = rest.replace("conv_out.", "conv_shortcut.")
        elif kind == "SwinLayers":
            rest = _swin_key(rest)
        renamed[f"{target}.{rest}"] = part.pop(key)
    return renamed


def convert_vqgan(state: StateDict) -> ITERVQModel:
    """Build an :class:`ITERVQModel` from the official Swin-VQGAN state dict (consumed)."""
    encoder = _take(state, "encoder.")
    decoder = _take(state, "decoder.")
    generator = _take(state, "generator.")
    quantize = _take(state, "quantize.")
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
    _load_strict(model, weights, "VQGAN")
    return model


# ---------------------------------------------------------------------------------------------- E_l
def convert_lq_encoder(part: StateDict, num_vq_embeddings: int) -> ITERDistortionRemovalEncoder:
    """E_l from the official ``lq_encoder.model.*`` tensors (prefix stripped; consumed)."""
    where = "E_l (lq_encoder)"
    indices = _indices(part, r"(\d+)\.")
    stages = [i for i in indices if f"{i}.0.weight" in part]
    if not indices or indices[0] != 0 or stages != list(range(1, len(stages) + 1)):
        raise ConversionError(f"{where}: layout does not match the official LQEncoder")
    proj, swin_at, out = len(stages) + 1, len(stages) + 2, len(stages) + 3
    blocks = _indices(part, r"1\.(\d+)\.conv\.0\.norm\.weight") if stages else []
    swin_part = {k[len(f"{swin_at}.") :]: v for k, v in part.items() if k.startswith(f"{swin_at}.")}
    swin = _swin_config(swin_part, where)
    logits = _require(part, f"{out}.weight", where)
    if logits.shape[0] != num_vq_embeddings:
        raise ConversionError(
            f"{where}: predicts {logits.shape[0]} codes but the VQGAN codebook has {num_vq_embeddings} "
            "(checkpoints from different models?)"
        )
    config = dict(
        scale_factor=8 // 2 ** len(stages),
        vq_scale_factor=8,
        in_channels=_require(part, "0.weight", where).shape[1],
        base_channels=part["0.weight"].shape[0],
        blocks_per_stage=len(blocks),
        feature_dim=_require(part, f"{proj}.weight", where).shape[0],
        **_swin_fields(swin),
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
    _load_strict(model, weights, where)
    return model


def _swin_key_in(key: str, prefix: str) -> str:
    return prefix + _swin_key(key[len(prefix) :]) if key.startswith(prefix) else key


# ---------------------------------------------------------------------------------------------- φ_e / φ_r
def convert_token_network(part: StateDict, cls: type, num_vq_embeddings: int, where: str, condition_first: bool):
    """φ_e or φ_r from the official ``SwinModel`` tensors (prefix stripped; consumed).

    ``condition_first``: the official network received the condition S_l as its first input (φ_r does).
    """
    code_emb = _require(part, "code_emb.weight", where)
    inputs = code_emb.shape[1]
    if inputs not in (num_vq_embeddings, num_vq_embeddings + 1):
        raise ConversionError(f"{where}: embeds {inputs} codes but the VQGAN codebook has {num_vq_embeddings}")
    swin_part = {k[len("swin_layers.") :]: v for k, v in part.items() if k.startswith("swin_layers.")}
    swin = _swin_config(swin_part, where)
    config = dict(
        num_vq_embeddings=num_vq_embeddings,
        out_channels=_require(part, "conv_out.2.weight", where).shape[0],
        use_mask_token=inputs == num_vq_embeddings + 1,
        hidden_dim=code_emb.shape[0],
        **_swin_fields(swin),
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
        weights[ours] = _require(part, official, where)
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
    _load_strict(model, weights, where)
    return model


# ---------------------------------------------------------------------------------------------- whole pipeline
def _load_strict(model: torch.nn.Module, weights: StateDict, where: str) -> None:
    expected = model.state_dict()
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    if missing or unexpected:
        detail = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise ConversionError(f"{where}: {len(missing)} missing / {len(unexpected)} unexpected weights ({detail})")
    for key, value in weights.items():
        if value.shape != expected[key].shape:
            raise ConversionError(f"{where}: {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    model.eval()


def split_iter_checkpoint(state: StateDict, vqgan_state: StateDict) -> StateDict:
    """Drop the ``vqgan.*`` copy from an ITER state dict after checking that it equals the VQGAN file.

    The ``generator.*`` decoder alias may be present on either side or not; where present it must equal the decoder.
    """
    copy = _take(state, "vqgan.")
    if not copy:
        return state

    def without_alias(sd: StateDict, where: str) -> StateDict:
        for key in [k for k in sd if k.startswith("generator.")]:
            twin = sd.get("decoder." + key[len("generator.") :])
            if twin is None or not torch.equal(sd[key], twin):
                raise ConversionError(f"{where}: {key} differs from its decoder.* twin")
        return {k: v for k, v in sd.items() if not k.startswith("generator.")}

    copy, reference = without_alias(copy, "ITER file vqgan.*"), without_alias(vqgan_state, "VQGAN file")
    if copy.keys() != reference.keys():
        differing = sorted(copy.keys() ^ reference.keys())
        raise ConversionError(f"the ITER file's vqgan.* keys differ from the VQGAN file's (e.g. {differing[0]!r})")
    for key, value in copy.items():
        if value.shape != reference[key].shape or not torch.equal(value, reference[key]):
            raise ConversionError(
                f"the ITER file's vqgan.{key} differs from the VQGAN file: checkpoints do not belong together"
            )
    return state


def convert_official_checkpoints(vqgan_checkpoint: str | Path, iter_checkpoint: str | Path):
    """Read ``ITER_swinvqgan.pth`` and ``ITER_x{2,4}.pth`` and return a ready :class:`ITERPipeline` (fp32)."""
    from .pipelines import ITERPipeline
    from .schedulers import MaskedTokenScheduler

    vqgan_state = load_official_checkpoint(vqgan_checkpoint)
    iter_state = load_official_checkpoint(iter_checkpoint)
    if any(k.startswith(LQ_PREFIX) for k in vqgan_state) or not any(k.startswith("encoder.") for k in vqgan_state):
        raise ConversionError(f"{vqgan_checkpoint}: not a Swin-VQGAN checkpoint (were the two files swapped?)")
    if not any(k.startswith(LQ_PREFIX) for k in iter_state):
        raise ConversionError(f"{iter_checkpoint}: no lq_encoder.* keys, not an ITER x2/x4 checkpoint")
    iter_state = split_iter_checkpoint(dict(iter_state), vqgan_state)
    try:
        vqvae = convert_vqgan(dict(vqgan_state))
        num_codes = vqvae.config.num_vq_embeddings
        encoder = convert_lq_encoder(_take(iter_state, LQ_PREFIX), num_codes)
        evaluator = convert_token_network(_take(iter_state, PHI_E_PREFIX), ITERTokenEvaluator, num_codes, "φ_e (token_crit_net)", condition_first=False)
        refiner = convert_token_network(_take(iter_state, PHI_R_PREFIX), ITERRefinementTransformer, num_codes, "φ_r (token_refine_net)", condition_first=True)
    except (KeyError, IndexError, RuntimeError) as error:
        raise ConversionError(f"checkpoint layout not understood: {type(error).__name__}: {error}") from None
    if iter_state:
        raise ConversionError(f"{iter_checkpoint}: {len(iter_state)} unexpected keys, e.g. {sorted(iter_state)[0]!r}")
    if evaluator.config.out_channels != 2 or refiner.config.out_channels != num_codes or not refiner.config.use_mask_token:
        raise ConversionError("token networks do not have the φ_e (2 outputs) / φ_r (K+1 inputs, K outputs) shapes")
    scheduler = MaskedTokenScheduler()  # official inference: T = 8, α = 0.7, temperatures 1, linear
    return ITERPipeline(vqvae=vqvae, encoder=encoder, evaluator=evaluator, refiner=refiner, scheduler=scheduler)


# ---------------------------------------------------------------------------------------------- writing
VARIANTS = {"float16": ("fp16", torch.float16), "bfloat16": ("bf16", torch.bfloat16)}


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file, in hex."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _quiet_diffusers():
    from diffusers.utils import logging

    previous = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(previous)


def check_replaceable(output_dir: Path, overwrite: bool) -> None:
    """Refuse to write into ``output_dir`` unless it is new or empty, or (with ``overwrite``) holds a pipeline.

    ``overwrite`` never replaces a folder of other files, the current directory, one of its parents, the home
    directory or the file-system root, whatever it holds.
    """
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise ConversionError(f"{output_dir} exists and is not a folder")
    if not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise ConversionError(f"{output_dir} exists and is not empty (pass --overwrite to replace a pipeline folder)")
    resolved = output_dir.resolve()
    protected = {Path.cwd().resolve(), *Path.cwd().resolve().parents, Path.home().resolve()}
    if resolved in protected:
        raise ConversionError(f"{output_dir} is the current directory, one of its parents or the home folder: "
                              "--overwrite never replaces it; choose a new folder")
    if not (output_dir / "model_index.json").is_file():
        raise ConversionError(f"{output_dir} holds files but no pipeline (no model_index.json): --overwrite only "
                              "replaces a pipeline folder; choose a new or empty folder")


def convert_and_save(
    vqgan_checkpoint: str | Path,
    iter_checkpoint: str | Path,
    output_dir: str | Path,
    dtype: str = "float32",
    overwrite: bool = False,
    hub_model_id: str | None = None,
    release_url: str | None = None,
) -> Path:
    """Convert the official files and write a complete pipeline folder with a model card, atomically.

    The folder always holds fp32 safetensors; ``dtype="float16"``/``"bfloat16"`` adds the ``fp16``/``bf16``
    variant (load it with ``variant="fp16", dtype=torch.float16``). The card records the SHA-256 of both files and
    ``release_url``, where they were downloaded from (None: local files). Nothing is left on disk if anything fails.
    """
    import shutil
    import tempfile

    from .model_card import converted_model_card

    output_dir = Path(output_dir)
    if dtype != "float32" and dtype not in VARIANTS:
        raise ConversionError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
    check_replaceable(output_dir, overwrite)
    pipe = convert_official_checkpoints(vqgan_checkpoint, iter_checkpoint)
    sources = {Path(p).name: sha256_file(p) for p in (vqgan_checkpoint, iter_checkpoint)}
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        pipe.save_pretrained(staging, safe_serialization=True)
        if dtype in VARIANTS:
            variant, torch_dtype = VARIANTS[dtype]
            with _quiet_diffusers():  # diffusers 0.42 warns about an empty keep-in-fp32 list on every .to()
                pipe.to(dtype=torch_dtype).save_pretrained(staging, safe_serialization=True, variant=variant)
                pipe.to(dtype=torch.float32)
        converted_model_card(pipe, sources, hub_model_id, release_url).save(staging / "README.md")
        staging.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def pipeline_files(folder: str | Path) -> list[str]:
    """The files of a pipeline folder, relative to it: ``model_index.json``, the folders of the components it names,
    and the card (``README.md``) with the images it shows. Training checkpoints, logs and other files are not."""
    import json

    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    components = [name for name, value in index.items() if isinstance(value, list) and (folder / name).is_dir()]
    files = [p for name in components for p in (folder / name).rglob("*") if p.is_file()]
    files.append(folder / "model_index.json")
    if (folder / "README.md").is_file():
        card = (folder / "README.md").read_text(encoding="utf-8")
        files.append(folder / "README.md")
        files += [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and f"./{p.name})" in card]
    return sorted(p.relative_to(folder).as_posix() for p in files)


def push_folder_to_hub(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create (or reuse) a Hub model repo and upload the pipeline in ``folder`` to it; returns the repo URL.

    Only :func:`pipeline_files` are uploaded, so that a training folder's ``checkpoint-*``, logs and validation
    images stay local.
    """
    from huggingface_hub import create_repo, upload_folder

    url = create_repo(repo_id, private=private, exist_ok=True, token=token)
    upload_folder(repo_id=url.repo_id, folder_path=str(folder), token=token, commit_message="Add ITER pipeline",
                  allow_patterns=pipeline_files(folder))
    return str(url)
