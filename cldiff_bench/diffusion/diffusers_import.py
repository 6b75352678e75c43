"""Import a diffusers UNet2DModel (the network the original study trained) into our U-Net.

Only the UNet2DModel configurations our U-Net computes exactly are accepted: DownBlock2D / AttnDownBlock2D down,
UpBlock2D / AttnUpBlock2D up with attention at the same levels, UNetMidBlock2D, positional time embedding with
cosines first and no frequency shift, GroupNorm eps 1e-5, SiLU, stride-2 convolution down and nearest + convolution
up. Anything else is refused with a UserError naming the field, never approximated.

The parameter names map module by module (ours -> diffusers; i is the level, deepest first on the up path as in
both models, j the ResNet / attention index within it):

    time_embedding.0                 time_embedding.linear_1
    time_embedding.2                 time_embedding.linear_2
    conv_in                          conv_in
    down.{i}.resnets.{j}.*           down_blocks.{i}.resnets.{j}.*       (norm1 conv1 time_emb_proj norm2 conv2
                                                                           conv_shortcut, same names)
    down.{i}.attentions.{j}.*        down_blocks.{i}.attentions.{j}.*    (group_norm to_q to_k to_v)
    down.{i}.attentions.{j}.to_out   down_blocks.{i}.attentions.{j}.to_out.0
    down.{i}.resample.conv           down_blocks.{i}.downsamplers.0.conv
    mid_res1                         mid_block.resnets.0
    mid_attn                         mid_block.attentions.0              (to_out -> to_out.0 as above)
    mid_res2                         mid_block.resnets.1
    up.{i}.resnets / attentions      up_blocks.{i}.resnets / attentions  (as on the down path)
    up.{i}.resample.conv             up_blocks.{i}.upsamplers.0.conv
    norm_out                         conv_norm_out
    conv_out                         conv_out

Checkpoints written by diffusers before 0.17 (the study pinned 0.16.1) name the attention projections query, key,
value and proj_attn; they are read as to_q, to_k, to_v and to_out.0, as diffusers itself does.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import UserError
from ..io import atomic_torch_save, load_tensors
from .unet import UNet, UNetConfig

MODEL_FILE_FORMAT = "cldiff-bench-unet"

# Field values that our U-Net hard-wires; a config may state them or leave them to diffusers' defaults.
_FIXED = {
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "mid_block_type": "UNetMidBlock2D",
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "class_embed_type": None,
    "num_class_embeds": None,
}
# Fields that do not change the network (num_train_timesteps only sizes a "learned" time embedding, which _FIXED
# refuses; sample_size is checked for divisibility only).
_IGNORED = {"sample_size", "num_train_timesteps"}
_HANDLED = {"in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
            "layers_per_block", "dropout", "act_fn", "attention_head_dim", "norm_num_groups", "attn_norm_num_groups",
            "add_attention", "time_embedding_dim"}
# diffusers' defaults for the fields read below, for configs written by versions that predate a field.
_DEFAULTS = {"in_channels": 3, "out_channels": 3, "layers_per_block": 2, "dropout": 0.0, "act_fn": "silu",
             "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "add_attention": True,
             "time_embedding_dim": None,
             "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
             "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
             "block_out_channels": (224, 448, 672, 896)}


def _refuse(field: str, value, why: str) -> UserError:
    return UserError(f"diffusers UNet2DModel config field {field}={json.dumps(value)} is not supported: {why}")


def _block_kind(field: str, i: int, name: str, plain: str, attn: str) -> bool:
    """True for the attention variant. diffusers strips a 'UNetRes' prefix from block names, so we do too."""
    base = name[len("UNetRes"):] if isinstance(name, str) and name.startswith("UNetRes") else name
    if base not in (plain, attn):
        raise _refuse(f"{field}[{i}]", name, f"our U-Net has only {plain} and {attn}")
    return base == attn


def unet_config_from_diffusers(config: dict) -> UNetConfig:
    """Our UNetConfig for a diffusers UNet2DModel config dict (as in its config.json)."""
    if not isinstance(config, dict):
        raise UserError(f"a diffusers UNet2DModel config is a JSON object, got {type(config).__name__}")
    cls = config.get("_class_name", "UNet2DModel")
    if cls != "UNet2DModel":
        raise UserError(f"diffusers config _class_name={json.dumps(cls)} is not supported: only UNet2DModel is")
    for key in config:
        if not key.startswith("_") and key not in _FIXED and key not in _IGNORED and key not in _HANDLED:
            raise UserError(f"diffusers UNet2DModel config field {key!r} is unknown to this importer")
    for key, ours in _FIXED.items():
        value = config.get(key, ours)
        same = abs(value - ours) <= 1e-12 if key == "norm_eps" and isinstance(value, (int, float)) else value == ours
        if not same:
            raise _refuse(key, value, f"our U-Net fixes it to {json.dumps(ours)}")

    c = {k: config.get(k, d) for k, d in _DEFAULTS.items()}
    chs = c["block_out_channels"]
    if not isinstance(chs, (list, tuple)) or not chs or not all(isinstance(x, int) and x > 0 for x in chs):
        raise _refuse("block_out_channels", chs, "expected a list of positive integers")
    chs = tuple(chs)
    n = len(chs)
    for field in ("down_block_types", "up_block_types"):
        if not isinstance(c[field], (list, tuple)) or len(c[field]) != n:
            raise _refuse(field, c[field], f"expected one block per entry of block_out_channels ({n})")
    if c["out_channels"] != c["in_channels"]:
        raise _refuse("out_channels", c["out_channels"], f"our U-Net predicts eps with in_channels "
                                                        f"({c['in_channels']}) channels")
    if c["act_fn"] not in ("silu", "swish"):
        raise _refuse("act_fn", c["act_fn"], "our U-Net uses SiLU")
    if c["time_embedding_dim"] not in (None, 4 * chs[0]):
        raise _refuse("time_embedding_dim", c["time_embedding_dim"],
                      f"ours is 4 * block_out_channels[0] = {4 * chs[0]}")
    groups = c["norm_num_groups"]
    if not isinstance(groups, int) or groups < 1:
        raise _refuse("norm_num_groups", groups, "expected a positive integer")
    for ch in chs:
        if ch % groups:
            raise _refuse("norm_num_groups", groups, f"does not divide the {ch} channels of a level")
    if c["attn_norm_num_groups"] not in (None, groups):
        raise _refuse("attn_norm_num_groups", c["attn_norm_num_groups"],
                      f"our attention GroupNorms use norm_num_groups ({groups})")
    for field in ("in_channels", "layers_per_block"):
        if not isinstance(c[field], int) or isinstance(c[field], bool) or c[field] < 1:
            raise _refuse(field, c[field], "expected a positive integer (one for all levels)")
    if not isinstance(c["dropout"], (int, float)) or not 0 <= c["dropout"] < 1:
        raise _refuse("dropout", c["dropout"], "expected a probability")

    down_attn = {i for i, b in enumerate(c["down_block_types"])
                 if _block_kind("down_block_types", i, b, "DownBlock2D", "AttnDownBlock2D")}
    up_attn = {n - 1 - i for i, b in enumerate(c["up_block_types"])
               if _block_kind("up_block_types", i, b, "UpBlock2D", "AttnUpBlock2D")}
    if down_attn != up_attn:
        raise _refuse("up_block_types", c["up_block_types"],
                      f"our U-Net attends at the same levels on both paths (down_block_types attend at "
                      f"{sorted(down_attn)}, counted from the top)")
    mid_attention = bool(c["add_attention"])

    head_dim = c["attention_head_dim"]
    if not isinstance(head_dim, int) or head_dim < 1:
        raise _refuse("attention_head_dim", head_dim, "our U-Net needs one integer head width for all levels")
    attended = sorted({chs[i] for i in down_attn} | ({chs[-1]} if mid_attention else set()))
    for ch in attended:
        if ch % head_dim:
            raise _refuse("attention_head_dim", head_dim, f"does not divide the {ch} channels of an attention")

    sample_size = config.get("sample_size")
    sizes = sample_size if isinstance(sample_size, (list, tuple)) else [sample_size]
    for s in sizes:
        if s is not None and (not isinstance(s, int) or s % 2 ** (n - 1)):
            raise _refuse("sample_size", sample_size, f"our U-Net needs sizes divisible by {2 ** (n - 1)}")

    try:
        return UNetConfig(in_channels=c["in_channels"], channels=chs, layers_per_block=c["layers_per_block"],
                          attention_levels=tuple(sorted(down_attn)), mid_attention=mid_attention,
                          attention_head_dim=head_dim, norm_groups=groups, dropout=float(c["dropout"]))
    except ValueError as exc:
        raise UserError(f"diffusers UNet2DModel config not supported: {exc}") from exc


# Our module prefix -> diffusers' (regex, replacement), tried in order; the first match wins.
_PREFIX_RULES = [
    (r"^time_embedding\.0\.", "time_embedding.linear_1."),
    (r"^time_embedding\.2\.", "time_embedding.linear_2."),
    (r"^(down|up)\.(\d+)\.(resnets|attentions)\.", lambda m: f"{m[1]}_blocks.{m[2]}.{m[3]}."),
    (r"^down\.(\d+)\.resample\.", r"down_blocks.\1.downsamplers.0."),
    (r"^up\.(\d+)\.resample\.", r"up_blocks.\1.upsamplers.0."),
    (r"^mid_res1\.", "mid_block.resnets.0."),
    (r"^mid_attn\.", "mid_block.attentions.0."),
    (r"^mid_res2\.", "mid_block.resnets.1."),
    (r"^norm_out\.", "conv_norm_out."),
    (r"^(conv_in|conv_out)\.", r"\1."),
]
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def diffusers_name(ours: str) -> str:
    """diffusers' name of our parameter `ours` (see the table in the module docstring)."""
    for pattern, repl in _PREFIX_RULES:
        name, hits = re.subn(pattern, repl, ours, count=1)
        if hits:
            # Our attention output is a Linear; diffusers' is to_out = [Linear, Dropout].
            return re.sub(r"(attentions\.\d+)\.to_out\.", r"\1.to_out.0.", name)
    raise KeyError(f"no diffusers name for parameter {ours!r}")


def _our_shapes(config: UNetConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        return {k: v.shape for k, v in UNet(config).state_dict().items()}


def name_map(config: UNetConfig) -> dict[str, str]:
    """{our parameter name: diffusers' name} for every parameter of UNet(config)."""
    return {n: diffusers_name(n) for n in _our_shapes(config)}


def _modern_names(state: dict) -> dict:
    """Pre-0.17 attention names renamed as diffusers renames them on load."""
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"(.*attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)", key)
        new = f"{m[1]}.{_LEGACY_ATTENTION[m[2]]}.{m[3]}" if m else key
        if new in out or (m and new in state):
            raise UserError(f"diffusers state dict has both {key!r} and its newer name {new!r}")
        out[new] = value
    return out


def convert_state_dict(diffusers_state: dict, config: UNetConfig) -> dict:
    """Our state dict (float32) for UNet(config) from a diffusers UNet2DModel state dict of the same configuration.

    Every diffusers key must be used and every one of ours filled, with the same shape."""
    state = _modern_names(diffusers_state)
    shapes = _our_shapes(config)
    ours = {}
    for name in shapes:
        theirs = diffusers_name(name)
        if theirs not in state:
            raise UserError(f"diffusers state dict lacks {theirs!r} (for our {name!r})")
        tensor = state.pop(theirs)
        if not isinstance(tensor, torch.Tensor):
            raise UserError(f"diffusers state dict entry {theirs!r} is not a tensor")
        if tensor.shape != shapes[name]:
            raise UserError(f"diffusers {theirs!r} has shape {tuple(tensor.shape)}, our {name!r} needs "
                            f"{tuple(shapes[name])}")
        ours[name] = tensor.detach().to(torch.float32).contiguous().clone()
    if state:
        raise UserError(f"diffusers state dict has {len(state)} key(s) our U-Net has no place for, first "
                        f"{sorted(state)[0]!r}")
    return ours


def _model_folder(path: Path) -> Path:
    """The UNet folder: `path` itself, or its unet/ subfolder when `path` is a saved pipeline (as the study saved)."""
    if not path.is_dir():
        raise UserError(f"{path}: no such diffusers model folder")
    if not (path / "config.json").is_file() and (path / "unet" / "config.json").is_file():
        return path / "unet"
    return path


def _read_weights(folder: Path) -> dict:
    st, binary = folder / "diffusion_pytorch_model.safetensors", folder / "diffusion_pytorch_model.bin"
    if st.is_file():
        try:
            from safetensors.torch import load_file
        except ImportError:
            if not binary.is_file():
                raise UserError(f"{st} needs the safetensors package (pip install safetensors)") from None
        else:
            try:
                return load_file(str(st), device="cpu")
            except Exception as exc:
                first = str(exc).strip().split("\n")[0]
                raise UserError(f"{st} is corrupt ({type(exc).__name__}: {first})") from exc
    if binary.is_file():
        state = load_tensors(binary)  # weights_only: a .bin is a pickle, never run its code
        if not isinstance(state, dict):
            raise UserError(f"{binary} is not a state dict")
        return state
    raise UserError(f"{folder}: no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin")


def load_diffusers_unet(path) -> tuple[UNetConfig, dict]:
    """(our config, our state dict) from a diffusers UNet2DModel folder (or a pipeline folder with unet/ in it).

    Reads the files directly: diffusers need not be installed."""
    folder = _model_folder(Path(path))
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{cfg_file}: missing (not a diffusers model folder)")
    try:
        raw = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{cfg_file} is corrupt (not valid JSON: {exc})") from exc
    config = unet_config_from_diffusers(raw)
    return config, convert_state_dict(_read_weights(folder), config)


def import_diffusers_unet(src, dst_file) -> UNetConfig:
    """Convert the diffusers model folder `src` into our model file `dst_file` (written atomically)."""
    config, state = load_diffusers_unet(src)
    atomic_torch_save({"format": MODEL_FILE_FORMAT, "unet_config": config.to_dict(), "state_dict": state},
                      Path(dst_file))
    return config


def load_model_file(path) -> tuple[UNetConfig, dict]:
    """(config, state dict) from a model file written by import_diffusers_unet."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file")
    doc = load_tensors(path)
    if not isinstance(doc, dict) or doc.get("format") != MODEL_FILE_FORMAT:
        raise UserError(f"{path} is not a {MODEL_FILE_FORMAT} model file")
    try:
        config = UNetConfig.from_dict(doc["unet_config"])
        state = doc["state_dict"]
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is a damaged {MODEL_FILE_FORMAT} model file ({type(exc).__name__}: {exc})") from exc
    expected = _our_shapes(config)
    if not isinstance(state, dict) or set(state) != set(expected) or any(
            not isinstance(state[k], torch.Tensor) or state[k].shape != s for k, s in expected.items()):
        raise UserError(f"{path}: its state_dict does not fit the U-Net its unet_config describes")
    return config, state
