"""One distillation, round by round: the trained model, its optimizer and EMA, the round's teacher and the chains.

Data: none. The distillation is data-free, on the teacher's sampling path: a batch of chains, each an image on its
way from noise to a sample. An update trains the student on every chain at the chain's grid position, and the
teacher's steps that made the target move the chain on, so the path costs nothing beyond the target; a chain that
reaches the clean end starts again from fresh noise. At a round's start the chains are spread over the student's
steps (chain b starts b mod S steps along the path), so every update sees every noise level. No images of any task
are needed, which is what lets a continual learner distil its teacher of earlier tasks (teacher_accel). The one
exception is a method that learns from images (`needs_data`, dsd-anchored): its self-taught rounds draw a keyed
batch of the `anchor`'s images per update, noised at the round's student step starts, instead of chains.

Every draw is keyed (keys, round, update, chain), so a distillation resumed from its state continues exactly as it
would have. The chains (chains.py), the anchor's batches (anchor.py), a round's optimisation and learning rates
(round_optimisation.py), the loop over the rounds with its checkpoints (round_loop.py) and the state a checkpoint
holds (resume.py) are modules of their own.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..core import DiffusionCore
from ..cost import CostMeter
from ..diffusion.unet import UNetConfig
from ..errors import UserError
from ..optimisation import WeightAverage, optimisation_step
from .anchor import AnchorBatches
from .base import DistillMethod, DistillOptions, plan_rounds
from .chains import Chains
from .objective import STUDENT_PREDICTION, at, ddim_step, step_grid, student_config
from .resume import distillation_state, restore_distillation
from .round_loop import run_rounds
from .round_optimisation import RoundLosses, round_average, round_optimizer, schedule_learning_rate


class UpdateContext:
    """What a method's update works with (DistillMethod.update): the trained `model`, the `options`, the `core`, the
    round's `grid` (timesteps and alpha_bar), its `teacher` and `teacher_prediction` (no teacher in a self-taught
    round), the images and noise of a data-anchored update, and the two network calls below."""

    def __init__(self, core: DiffusionCore, options: DistillOptions, model: nn.Module):
        self.core, self.options, self.model = core, options, model
        self.grid: tuple[torch.Tensor, torch.Tensor] | None = None
        self.teacher: nn.Module | None = None
        self.teacher_prediction: str | None = None
        self.anchor_x0: torch.Tensor | None = None   # this update's images and the noise they were noised with
        self.anchor_eps: torch.Tensor | None = None

    def path_step(self, model: nn.Module, prediction: str, z: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """`model`'s deterministic DDIM step (no gradient) from grid positions pos to pos + 1."""
        t, ab = self.grid
        with torch.no_grad(), self.core.autocast():
            out = model(z, t[pos])
        return ddim_step(out.float(), z, at(ab, pos, z), at(ab, pos + 1, z), prediction)

    def student_output(self, z: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The trained model's output at the chains (with gradient)."""
        t, _ = self.grid
        with self.core.autocast():
            return self.model(z, t[pos]).float()


class Distillation(UpdateContext):
    """`model` is the network trained: a UNet of the student's configuration (prediction v) holding the teacher's
    weights, its forwards counted by `core.meter` (as the student's in `cldiff-bench distill`, as the teacher's
    inside a continual-learning run). `core` provides the schedule, the autocast and frozen teacher copies.
    `anchor(seeds)`: images by seed, in [-1, 1], for the methods that learn from data (method.needs_data)."""

    def __init__(self, core: DiffusionCore, method: type[DistillMethod], options: DistillOptions,
                 teacher_config: UNetConfig, model: nn.Module, keys: tuple[int, ...] = (),
                 anchor: Callable[[list[int]], torch.Tensor] | None = None):
        super().__init__(core, options, model)
        self.method = method
        self.teacher_config = teacher_config
        self.student_config = student_config(teacher_config)
        self.rounds = plan_rounds(method, options, teacher_config.prediction)
        self.keys = tuple(int(k) for k in keys)
        if method.needs_data and anchor is None:
            raise UserError(f"distillation method {method.name!r} learns from images, and none were given")
        self.anchor = anchor
        self._anchor_batches = None if anchor is None else AnchorBatches(anchor, self.keys, core.image_shape,
                                                                         core.device)
        self.chains = Chains(self.keys, core.image_shape, core.device)
        self.round_index = 0
        self.update_index = 0
        self.records: list[dict] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.ema: WeightAverage | None = None
        self.losses = RoundLosses()
        self.round_start_cost: dict | None = None

    @property
    def round(self):
        return self.rounds[self.round_index]

    @property
    def finished(self) -> bool:
        return self.round_index >= len(self.rounds)

    # --- rounds --------------------------------------------------------------------------------------------------
    def begin_round(self, fresh: bool = True) -> None:
        """Set up the current round: its grid, its teacher (a frozen copy of the weights the round starts from),
        a fresh optimizer and EMA, and (unless restoring) the chains spread along the teacher's path."""
        round_ = self.round
        self.grid = step_grid(self.core.schedule, round_.teacher_steps)
        self.teacher = None  # the previous round's, released before the copy
        self.teacher_prediction = STUDENT_PREDICTION
        if not round_.self_taught:
            config = self.teacher_config if self.round_index == 0 else self.student_config
            self.teacher = self.core.frozen_copy(self.model.state_dict(), role="teacher", config=config)
            self.teacher_prediction = config.prediction
        self.model.train()
        self.optimizer = round_optimizer(self.model, self.options, round_)
        self.ema = round_average(self.model, self.student_config, self.core.device, self.options.ema_decay)
        self.losses = RoundLosses()
        self.round_start_cost = self.core.meter.snapshot()
        if fresh and not self.method.uses_data(round_):
            model, prediction = self._path_model()
            self.chains.spread(round_, self.round_index, self.update_index, self.options.batch_size,
                               lambda z, pos: self.path_step(model, prediction, z, pos))

    def _path_model(self) -> tuple[nn.Module, str]:
        return (self.model, STUDENT_PREDICTION) if self.teacher is None else (self.teacher, self.teacher_prediction)

    def step(self) -> None:
        """One update: the method's loss and the optimisation step (clipping, Adam, the EMA); the chains move on."""
        round_ = self.round
        from_data = self.method.uses_data(round_)
        if from_data:  # the images and noise kept for the update's data term
            x0, eps, z, pos = self._anchor_batches.draw(round_, self.round_index, self.update_index,
                                                         self.options.batch_size, self.grid[1])
            self.anchor_x0, self.anchor_eps = x0, eps
        else:
            z, pos = self.chains.z, self.chains.pos
        loss, z_end = self.method.update(self, z, pos, round_)
        schedule_learning_rate(self.optimizer, self.options, round_, self.update_index)
        optimisation_step(loss, self.model, self.optimizer, self.ema)
        self.losses.add(loss)
        self.update_index += 1
        if not from_data:
            self.chains.move_on(z_end, round_, self.round_index, self.update_index)

    def read_losses(self) -> None:
        """Add the losses kept on the device to the round's sum (one read); a loss that is not finite stops."""
        self.losses.read(self.round_index, self.update_index)

    def end_round(self) -> dict:
        """Close the current round: the weights handed on are its EMA's (or the trained ones); its record."""
        self.read_losses()
        if self.ema is not None:
            self.model.load_state_dict(self.ema.weights.state_dict())
        round_ = self.round
        updates = self.options.updates_in(round_)
        record = {**round_.to_dict(), "updates": updates, "mean_loss": self.losses.total / updates,
                  "cost": CostMeter.difference(self.core.meter.snapshot(), self.round_start_cost)}
        self.records.append(record)
        self.round_index += 1
        self.update_index = 0
        self.teacher = self.optimizer = self.ema = None
        self.chains.clear()
        return record

    def run(self, progress: bool = False, checkpoint: Callable[[], None] | None = None, checkpoint_every: int = 0,
            on_round_end: Callable[[dict], None] | None = None, stop=None, desc: str = "distill") -> None:
        """Every remaining update of every round, checkpointed (`run_rounds`)."""
        run_rounds(self, progress, checkpoint, checkpoint_every, on_round_end, stop, desc)

    # --- resume --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything to continue exactly where this stands (losses read first: call `read_losses`)."""
        return distillation_state(self)

    def load_state_dict(self, state: dict) -> None:
        restore_distillation(self, state)
