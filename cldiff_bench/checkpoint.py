"""Run checkpoints: state dicts and plain values in one file, written atomically, loaded with weights_only=True."""
from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .io import atomic_torch_save, load_tensors

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, state: dict) -> None:
    atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, path)


def load_checkpoint(path: Path, expect: dict) -> dict:
    """Load and check that the checkpoint belongs to this run (suite version, config, strategy, model preset)."""
    state = load_tensors(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a cldiff-bench checkpoint of format {CHECKPOINT_FORMAT}")
    for key, want in expect.items():
        if state.get(key) != want:
            raise UserError(f"refusing to resume from {path}: it has {key} {state.get(key)!r}, this run has {want!r}")
    return state
