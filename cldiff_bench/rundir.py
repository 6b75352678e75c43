"""A run's directory: the configuration it holds (so a run only continues its own), checkpoints, the model after
every task, sample grids and the result file."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import __version__
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .errors import UserError
from .grids import save_grid
from .io import atomic_torch_save, atomic_write_json, load_tensors, read_json
from .losslog import LOSS_LOG_NAME, TENSORBOARD_DIR
from .results import RESULT_NAME, result_path

if TYPE_CHECKING:
    from .context import RunContext

CONFIG_NAME = "config.json"
# Settings of how fast a run goes, not of what it computes (beyond rounding): a run may be resumed with others.
SPEED_KEYS = ("speed",)


def config_hash(resolved: dict) -> str:
    defining = {k: v for k, v in resolved.items() if k not in SPEED_KEYS}
    return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]


def task_model_path(k: int) -> str:
    return f"models/task{k}.pt"


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.config_digest: str | None = None  # set by `prepare`

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def result_path(self) -> Path:
        return result_path(self.path)

    def prepare(self, resolved: dict, force: bool, resume: bool) -> bool:
        """Make the directory ready for the run of `resolved`; True when it already holds that run's result."""
        cfg_file = self.path / CONFIG_NAME
        digest = self.config_digest = config_hash(resolved)
        if cfg_file.is_file():
            existing = read_json(cfg_file)
            # Hashed again rather than trusted, so run directories written before the speed settings were left
            # out of the hash are still recognised.
            theirs = config_hash(existing.get("config") or {})
            same = theirs == digest
            if not same and not force:
                raise UserError(f"{self.path} holds a run with another configuration "
                                f"({theirs} != {digest}); use another --out or --force")
            if force or not same:
                self.clear()
            elif self.result_path.is_file():
                return True
            elif self.checkpoint_path.is_file() and not resume:
                raise UserError(f"{self.path} holds an unfinished run of this configuration; continue it with "
                                f"--resume or start over with --force")
        elif self.path.exists() and any(self.path.iterdir()):
            if not force:
                raise UserError(f"{self.path} is not empty and holds no cldiff-bench run; use --force")
            self.clear()
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg_file, {"config_hash": digest, "config": resolved})
        return False

    def clear(self) -> None:
        for name in (CHECKPOINT_NAME, RESULT_NAME, "samples", "models", LOSS_LOG_NAME, TENSORBOARD_DIR):
            path = self.path / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def _identity(self, context: RunContext) -> dict:
        return {"suite_version": __version__, "config_hash": self.config_digest,
                "strategy": context.settings.strategy, "model_preset": context.settings.budget.model}

    def save_checkpoint(self, context: RunContext, position: dict, optimizer: dict | None,
                        records: list[dict]) -> None:
        evaluator = context.evaluator
        save_checkpoint(self.checkpoint_path, {
            **self._identity(context), "position": position,
            "model": context.core.model.state_dict(), "ema": context.core.ema_state(), "optimizer": optimizer,
            "strategy_state": context.strategy.state_dict(),
            "evaluator": evaluator.state_dict() if evaluator is not None else None,
            "meter": context.meter.state_dict(), "records_json": json.dumps(records),
        })

    def restore(self, context: RunContext) -> tuple[dict, list[dict]]:
        """Load the checkpoint into `context`; (where to continue, with the optimizer's state; the task records)."""
        state = load_checkpoint(self.checkpoint_path, expect=self._identity(context))
        context.core.model.load_state_dict(state["model"])
        context.core.load_ema_state(state.get("ema"))
        context.strategy.load_state_dict(state["strategy_state"])
        if context.evaluator is not None and state["evaluator"] is not None:
            # Checkpoints written before the evaluator kept the previous model hold it beside the evaluator's state.
            context.evaluator.load_state_dict({"previous_model": state.get("previous_model"), **state["evaluator"]})
        context.meter.load_state_dict(state["meter"])
        return {**state["position"], "optimizer": state["optimizer"]}, json.loads(state["records_json"])

    # --- per-task outputs and the result -------------------------------------------------------------------------
    def save_task_model(self, k: int, state: dict) -> None:
        atomic_torch_save(state, self.path / task_model_path(k))

    def load_task_model(self, k: int) -> dict:
        path = self.path / task_model_path(k)
        if not path.is_file():
            raise UserError(f"{path} is missing: the run was made without per-task models and cannot be re-scored")
        return load_tensors(path)

    def save_grid(self, k: int, images: torch.Tensor, captions: list[str] | None) -> str:
        """Write task k's sample grid; its path relative to the run directory, as the result records it."""
        rel = f"samples/task{k}.png"
        save_grid(images, self.path / rel, captions)
        return rel

    def write_result(self, result: dict) -> Path:
        atomic_write_json(self.result_path, result)
        return self.result_path
