"""Per-iteration training losses a researcher can plot: always `losses.csv` in the run directory, and with
`--log tensorboard` also TensorBoard event files (through the tensorboard package Avalanche already installs).

A resumed run first drops the rows at or after the position it resumes from, so the file holds every iteration
exactly once, as an uninterrupted run's would.
"""
from __future__ import annotations

import csv
from pathlib import Path

from .errors import UserError

LOSS_LOG_NAME = "losses.csv"
TENSORBOARD_DIR = "tensorboard"
COLUMNS = ("task", "iteration", "loss", "data_loss", "replay_loss")


class LossLog:
    def __init__(self, run_dir: Path, tensorboard: bool = False):
        self.path = Path(run_dir) / LOSS_LOG_NAME
        self._file = None
        self._writer = None
        self._tensorboard = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise UserError("--log tensorboard needs the tensorboard package (pip install tensorboard)") from exc
            self._tensorboard = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR))

    def open(self, task: int, iteration: int) -> None:
        """Start writing at (task, iteration): rows from there on (a killed run's tail) are dropped first."""
        kept = []
        if self.path.is_file():
            with self.path.open(newline="") as f:
                kept = [row for row in csv.DictReader(f)
                        if (int(row["task"]), int(row["iteration"])) < (task, iteration)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        self._writer.writeheader()
        self._writer.writerows(kept)

    def write(self, task: int, iteration: int, values: dict[str, float]) -> None:
        self._writer.writerow({"task": task, "iteration": iteration,
                               **{k: f"{v:.6g}" for k, v in values.items() if k in COLUMNS}})
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(f"task{task}/{name}", value, iteration)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
