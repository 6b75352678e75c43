"""One distillation, round by round: the trained model, its optimizer and EMA, the round's teacher and the chains.

Data: none. The distillation is data-free, on the teacher's sampling path: a batch of chains, each an image on its
way from noise to a sample. An update trains the student on every chain at the chain's grid position, and the
teacher's steps that made the target move the chain on, so the path costs nothing beyond the target; a chain that
reaches the clean end starts again from fresh noise. At a round's start the chains are spread over the student's
steps (chain b starts b mod S steps along the path), so every update sees every noise level. No images of any task
are needed, which is what lets a continual learner distil its teacher of earlier tasks (teacher_accel). The one
exception is a method that learns from images (`needs_data`, dsd-anchored): its self-taught rounds draw a keyed
batch of the `anchor`'s images per update, noised at the round's student step starts, instead of chains.

The learning rate of each update comes from the options (constant, or warm-up then cosine within a round).

Every draw is keyed (keys, round, update, chain), so a distillation resumed from its state continues exactly as it
would have.
"""
from __future__ import annotations

import json
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from ..core import DiffusionCore
from ..cost import CostMeter
from ..diffusion.seeding import derive_seed, per_sample_normal
from ..diffusion.unet import UNet, UNetConfig
from ..errors import Interrupted, UserError
from ..optimisation import DeferredLosses, WeightAverage, optimisation_step
from .base import DistillMethod, DistillOptions, plan_rounds
from .objective import STUDENT_PREDICTION, at, ddim_step, step_grid, student_config

PURPOSE_CHAINS = 0xD157
PURPOSE_ANCHOR = 0xD158


class Distillation:
    """`model` is the network trained: a UNet of the student's configuration (prediction v) holding the teacher's
    weights, its forwards counted by `core.meter` (as the student's in `cldiff-bench distill`, as the teacher's
    inside a continual-learning run). `core` provides the schedule, the autocast and frozen teacher copies."""

    def __init__(self, core: DiffusionCore, method: type[DistillMethod], options: DistillOptions,
                 teacher_config: UNetConfig, model: nn.Module, keys: tuple[int, ...] = (),
                 anchor: Callable[[list[int]], torch.Tensor] | None = None):
        self.core, self.method, self.options = core, method, options
        self.teacher_config = teacher_config
        self.student_config = student_config(teacher_config)
        self.rounds = plan_rounds(method, options, teacher_config.prediction)
        self.model = model
        self.keys = tuple(int(k) for k in keys)
        # Images by seed, in [-1, 1], for the methods that learn from data (method.needs_data): the anchor.
        if method.needs_data and anchor is None:
            raise UserError(f"distillation method {method.name!r} learns from images, and none were given")
        self.anchor = anchor
        self.anchor_x0: torch.Tensor | None = None   # this update's images and the noise they were noised with
        self.anchor_eps: torch.Tensor | None = None
        self.round_index = 0
        self.update_index = 0
        self.records: list[dict] = []
        self.teacher: nn.Module | None = None
        self.teacher_prediction: str | None = None
        self.grid: tuple[torch.Tensor, torch.Tensor] | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.ema: WeightAverage | None = None
        self.z: torch.Tensor | None = None
        self.pos: torch.Tensor | None = None  # grid positions of the chains, on the CPU (read without a device sync)
        self.loss_sum = 0.0
        self._losses = DeferredLosses()  # this round's losses not yet read
        self._round_start: dict | None = None

    @property
    def round(self):
        return self.rounds[self.round_index]

    @property
    def finished(self) -> bool:
        return self.round_index >= len(self.rounds)

    # --- the pieces the methods call -----------------------------------------------------------------------------
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
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.options.learning_rate_at(round_, 0),
                                          weight_decay=self.options.weight_decay)
        self.ema = None
        if self.options.ema_decay is not None:
            self.ema = WeightAverage(self.model, UNet(self.student_config).to(self.core.device),
                                     self.options.ema_decay)
        self.loss_sum, self._losses = 0.0, DeferredLosses()
        self._round_start = self.core.meter.snapshot()
        if fresh and not self.method.uses_data(round_):
            self._start_chains()

    def _path_model(self) -> tuple[nn.Module, str]:
        return (self.model, STUDENT_PREDICTION) if self.teacher is None else (self.teacher, self.teacher_prediction)

    def _noise(self, chains: list[int]) -> torch.Tensor:
        seeds = [derive_seed(*self.keys, PURPOSE_CHAINS, self.round_index, self.update_index, b) for b in chains]
        return per_sample_normal(seeds, self.core.image_shape, device=self.core.device)

    def _start_chains(self) -> None:
        round_, n = self.round, self.options.batch_size
        phase = round_.stride * (torch.arange(n) % round_.student_steps)
        self.z = self._noise(list(range(n)))
        model, prediction = self._path_model()
        for s in range(int(phase.max())):
            moving = (phase > s).nonzero().squeeze(1)
            self.z[moving] = self.path_step(model, prediction, self.z[moving], torch.full((len(moving),), s))
        self.pos = phase

    def _anchor_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images of the anchor noised at the round's student step starts, keyed by (keys, round, update): the
        inputs of a data-anchored update, with the images and noise kept for its data term."""
        round_, n = self.round, self.options.batch_size
        key = (*self.keys, PURPOSE_ANCHOR, self.round_index, self.update_index)
        self.anchor_x0 = self.anchor([derive_seed(*key, 0, b) for b in range(n)]).to(self.core.device).float()
        self.anchor_eps = per_sample_normal([derive_seed(*key, 1, b) for b in range(n)], self.core.image_shape,
                                            device=self.core.device)
        generator = torch.Generator().manual_seed(derive_seed(*key, 2))
        pos = round_.stride * torch.randint(round_.student_steps, (n,), generator=generator)
        alpha_bar = at(self.grid[1], pos, self.anchor_x0)
        return alpha_bar.sqrt() * self.anchor_x0 + (1 - alpha_bar).sqrt() * self.anchor_eps, pos

    def step(self) -> None:
        """One update: the method's loss and the optimisation step (clipping, Adam, the EMA); the chains move on."""
        round_ = self.round
        from_data = self.method.uses_data(round_)
        z, pos = self._anchor_batch() if from_data else (self.z, self.pos)
        loss, z_end = self.method.update(self, z, pos, round_)
        for group in self.optimizer.param_groups:
            group["lr"] = self.options.learning_rate_at(round_, self.update_index)
        optimisation_step(loss, self.model, self.optimizer, self.ema)
        self._losses.add(loss)
        self.update_index += 1
        if from_data:
            return
        self.z, self.pos = z_end.detach(), self.pos + round_.stride
        ended = (self.pos >= round_.teacher_steps).nonzero().squeeze(1).tolist()
        if ended:
            self.z[ended] = self._noise(ended)
            self.pos[ended] = 0

    def read_losses(self) -> None:
        """Add the losses kept on the device to the round's sum (one read); a loss that is not finite stops."""
        if not self._losses:
            return
        first = self.update_index - len(self._losses)
        values, bad = self._losses.read()
        if bad is not None:
            raise UserError(f"the distillation loss became {values[bad]} in round {self.round_index} at update "
                            f"{first + bad}; try a lower --learning-rate")
        for v in values:  # one at a time: the same sum whatever the windows read (a resumed run reads others)
            self.loss_sum += v

    def end_round(self) -> dict:
        """Close the current round: the weights handed on are its EMA's (or the trained ones); its record."""
        self.read_losses()
        if self.ema is not None:
            self.model.load_state_dict(self.ema.weights.state_dict())
        round_ = self.round
        updates = self.options.updates_in(round_)
        record = {**round_.to_dict(), "updates": updates, "mean_loss": self.loss_sum / updates,
                  "cost": CostMeter.difference(self.core.meter.snapshot(), self._round_start)}
        self.records.append(record)
        self.round_index += 1
        self.update_index = 0
        self.teacher = self.optimizer = self.ema = self.z = self.pos = None
        return record

    def run(self, progress: bool = False, checkpoint: Callable[[], None] | None = None, checkpoint_every: int = 0,
            on_round_end: Callable[[dict], None] | None = None, stop=None, desc: str = "distill") -> None:
        """Every remaining update of every round. `checkpoint()` is called every `checkpoint_every` updates, at a
        stop request (then Interrupted is raised) and at every round boundary; `on_round_end(record)` once the
        round's weights are in `model`."""
        per_round = [self.options.updates_in(r) for r in self.rounds]
        bar = tqdm(total=sum(per_round), initial=sum(per_round[:self.round_index]) + self.update_index,
                   desc=desc, unit="update", disable=not progress, dynamic_ncols=True, mininterval=1)
        try:
            while not self.finished:
                if self.optimizer is None:
                    self.begin_round()
                bar.set_description(f"{desc} {self.round.teacher_steps}->{self.round.student_steps} steps")
                updates = per_round[self.round_index]
                while self.update_index < updates:
                    self.step()
                    bar.update(1)
                    periodic = checkpoint_every and self.update_index % checkpoint_every == 0
                    stopping = stop is not None and stop.requested
                    if checkpoint is not None and (stopping or (periodic and self.update_index < updates)):
                        self.read_losses()
                        checkpoint()
                    if stopping:
                        raise Interrupted(f"{stop.signal_name} in round {self.round_index}, update "
                                          f"{self.update_index}; continue with --resume")
                record = self.end_round()
                if on_round_end is not None:
                    on_round_end(record)
                if not self.finished:
                    self.begin_round()
                if checkpoint is not None:
                    checkpoint()
        finally:
            bar.close()

    # --- resume --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything to continue exactly where this stands (losses read first: call `read_losses`)."""
        active = not self.finished and self.optimizer is not None
        average = self.ema.state_dict() if active and self.ema is not None else {"weights": None, "updates": 0}
        return {"round": self.round_index, "update": self.update_index, "model": self.model.state_dict(),
                "teacher": self.teacher.state_dict() if active and self.teacher is not None else None,
                "optimizer": self.optimizer.state_dict() if active else None,
                "ema": average["weights"], "ema_updates": average["updates"],
                "z": self.z.cpu() if active and self.z is not None else None,
                "pos": self.pos.clone() if active and self.pos is not None else None, "loss_sum": self.loss_sum,
                "round_start_cost": self._round_start if active else None,
                "records_json": json.dumps(self.records)}

    def load_state_dict(self, state: dict) -> None:
        self.round_index, self.update_index = int(state["round"]), int(state["update"])
        self.records = json.loads(state["records_json"])
        self.model.load_state_dict(state["model"])
        if self.finished or state["optimizer"] is None:
            return
        self.begin_round(fresh=False)
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict({"weights": state["ema"], "updates": state["ema_updates"]})
        if state["z"] is not None:  # a data-anchored round keeps no chains
            self.z, self.pos = state["z"].to(self.core.device), state["pos"].clone()
        self.loss_sum = float(state["loss_sum"])
        self._round_start = state["round_start_cost"]
