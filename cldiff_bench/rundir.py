"""A run's directory: the configuration it holds (so a run only continues its own), checkpoints, the model after
every task, sample grids and the result file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .errors import UserError
from .sample_sheets import save_sample_sheet
from .io import atomic_torch_save, atomic_write_json, load_tensors
from .losslog import LOSS_LOG_NAME, TENSORBOARD_DIR
# The sweeps import CONFIG_NAME and config_hash from here.
from .output_dir import CONFIG_NAME, OutputDir, config_hash  # noqa: F401
from .results import RESULT_NAME as RUN_RESULT_NAME

if TYPE_CHECKING:
    from .context import RunContext


def task_model_path(k: int) -> str:
    return f"models/task{k}.pt"


class RunDir(OutputDir):
    RESULT_NAME = RUN_RESULT_NAME
    OUTPUTS = ("samples", "models", LOSS_LOG_NAME, TENSORBOARD_DIR)
    OTHER_CONFIGURATION = "a run with another configuration"
    UNFINISHED = "an unfinished run of this configuration"
    NOTHING = "no cldiff-bench run"

    # --- checkpoints ---------------------------------------------------------------------------------------------
    @staticmethod
    def _run_identity(context: RunContext) -> dict:
        return {"strategy": context.settings.strategy, "model_preset": context.settings.budget.model}

    def save_checkpoint(self, context: RunContext, position: dict, optimizer: dict | None,
                        records: list[dict]) -> None:
        evaluator = context.evaluator
        self.write_checkpoint({
            **self._run_identity(context), "position": position,
            "model": context.core.model.state_dict(), "ema": context.core.ema_state(), "optimizer": optimizer,
            "strategy_state": context.strategy.state_dict(),
            "evaluator": evaluator.state_dict() if evaluator is not None else None,
            "meter": context.meter.state_dict(), "records_json": json.dumps(records),
        })

    def restore(self, context: RunContext) -> tuple[dict, list[dict]]:
        """Load the checkpoint into `context`; (where to continue, with the optimizer's state; the task records)."""
        state = self.read_checkpoint(**self._run_identity(context))
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

    def save_sample_sheet(self, k: int, images: torch.Tensor, captions: list[str] | None) -> str:
        """Write task k's sample grid; its path relative to the run directory, as the result records it."""
        rel = f"samples/task{k}.png"
        save_sample_sheet(images, self.path / rel, captions)
        return rel

    def write_result(self, result: dict) -> Path:
        atomic_write_json(self.result_path, result)
        return self.result_path
