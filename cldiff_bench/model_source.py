"""Where a U-Net's weights can come from: a diffusers UNet2DModel folder (e.g. a model the study's code trained), a
model file written by `cldiff-bench import-unet`, or a run's per-task model (`models/taskK.pt`)."""
from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import torch

from .diffusion.diffusers_import import MODEL_FILE_FORMAT, load_diffusers_unet, load_model_file
from .diffusion.samplers import DEFAULT_SAMPLER
from .diffusion.unet import UNet, UNetConfig
from .errors import UserError
from .io import atomic_torch_save, load_tensors


def read_model(path) -> tuple[UNetConfig | None, dict]:
    """(its configuration, or None for a bare state dict; its state dict)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return load_diffusers_unet(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file or diffusers model folder")
    doc = load_tensors(path)
    if isinstance(doc, dict) and doc.get("format") == MODEL_FILE_FORMAT:
        return load_model_file(path)
    if isinstance(doc, dict) and doc and all(isinstance(v, torch.Tensor) for v in doc.values()):
        return None, doc
    raise UserError(f"{path} is neither a {MODEL_FILE_FORMAT} model file nor a U-Net state dict")


def weights_for(path, expected: UNetConfig) -> dict:
    """The state dict in `path`, checked to be a U-Net of exactly the configuration `expected`."""
    return checked_weights(path, *read_model(path), expected)


def checked_weights(path, config: UNetConfig | None, state: dict, expected: UNetConfig) -> dict:
    """`state` (read from `path` with its `config`, if the file has one) checked against `expected`."""
    if config is not None and config != expected:
        theirs, ours = asdict(config), asdict(expected)  # every field, the prediction type too
        diff = ", ".join(f"{k} {theirs[k]} != {ours[k]}" for k in ours if theirs.get(k) != ours[k])
        raise UserError(f"{path} holds a U-Net of another architecture than this run's model ({diff}); pick the "
                        f"matching --model preset")
    shapes = {k: v.shape for k, v in UNet(expected).state_dict().items()}
    wrong = sorted(set(shapes) ^ set(state)) or [k for k in shapes if state[k].shape != shapes[k]]
    if wrong:
        raise UserError(f"{path} holds a U-Net of another architecture than this run's model (first difference: "
                        f"{wrong[0]}); pick the matching --model preset")
    return state


def fingerprint(path) -> dict:
    """What a result records of a model it started from: the name and a hash of the weights, not where it lies."""
    path = Path(path).expanduser()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return {"name": path.name, "sha256": h.hexdigest()[:16]}


def save_model_file(path, config: UNetConfig, state: dict, sampling: dict | None = None, **extra) -> None:
    """Write a model file (the format `import-unet` writes, read by `score`, `run --init-model` and `distill`),
    atomically; `sampling` ({"sampler", "steps"}) says how the model is meant to be sampled, `extra` what made it."""
    doc = {"format": MODEL_FILE_FORMAT, "unet_config": config.to_dict(),
           "state_dict": {k: v.detach().cpu() for k, v in state.items()}, **extra}
    if sampling is not None:
        doc["sampling"] = dict(sampling)
    atomic_torch_save(doc, Path(path))


def model_sampling(path) -> dict:
    """How the model in `path` is meant to be sampled: {"sampler": name, "steps": N or None}; DDIM at the caller's
    steps for a model file that says nothing (every file but a distilled model's) and a diffusers folder."""
    path = Path(path).expanduser()
    recorded = {}
    if path.is_file():
        doc = load_tensors(path)
        if isinstance(doc, dict) and doc.get("format") == MODEL_FILE_FORMAT and isinstance(doc.get("sampling"), dict):
            recorded = doc["sampling"]
    return {"sampler": str(recorded.get("sampler", DEFAULT_SAMPLER)),
            "steps": int(recorded["steps"]) if recorded.get("steps") is not None else None}
