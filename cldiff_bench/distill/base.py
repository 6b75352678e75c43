"""What a distillation method is: how it plans its rounds and what one update's loss is.

A method is a class registered through the `cldiff_bench_distillers` hook (as strategies are through theirs), with

    rounds(from_steps, target_steps, teacher_prediction)   the rounds from the teacher's steps down to the target
    update(engine, z, pos, round_)                          one update's loss on the chains, and where they land

and `forwards_per_update`: network evaluations per image of one update in a halving round (a backward not
counted), which the cost meter is checked against (tests/test_distill.py).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from ..errors import UserError
from .objective import STUDENT_PREDICTION

if TYPE_CHECKING:
    from .engine import Distillation


@dataclass(frozen=True)
class Round:
    """One round: a teacher sampled with `teacher_steps` steps taught to a student sampled with `student_steps`.
    `self_taught`: the targets come from the student's own steps (no teacher copy in memory)."""
    teacher_steps: int
    student_steps: int
    self_taught: bool = False
    # A neighbours round (the DSD paper's DSDN): the model learns on consecutive steps of the teacher's grid, which
    # never halves, and is sampled with this many steps afterwards. None: a halving (or conversion) round.
    neighbours_to: int | None = None

    @property
    def stride(self) -> int:
        """Teacher steps per student step (2 halves, 1 only converts the prediction type)."""
        return self.teacher_steps // self.student_steps

    @property
    def converts(self) -> bool:
        """A round that only turns the teacher's prediction type into the student's."""
        return self.stride == 1

    @property
    def sampled_steps(self) -> int:
        """The steps the round's model is sampled with."""
        return self.neighbours_to or self.student_steps

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.neighbours_to is None:
            del d["neighbours_to"]  # recorded only where set, so the records made before it stay
        return d


@dataclass(frozen=True)
class DistillOptions:
    """A distillation's settings, all recorded in its result."""
    method: str
    target_steps: int
    from_steps: int = 64           # the teacher's sampling steps the first round starts from
    updates: int = 200             # updates per round
    batch_size: int = 64           # sampling-path chains, one image each per update
    learning_rate: float = 1e-4    # Adam's, constant; a fresh optimizer every round, as in Salimans & Ho
    ema_decay: float | None = 0.995  # the weights a round hands on are an EMA of its student's (None: the raw)
    # A round of their own, at the teacher's steps, to turn a teacher that is not a v model into one before the
    # halving starts, with its own length and learning rate. None: the method's plan (pd converts within its first
    # halving round, dsd in a conversion round of `updates`). Measured: the conversion is where the error is made
    # (pd's first-round loss ~3 against ~0.005 for the later rounds), so it is the round that needs the budget.
    convert_updates: int | None = None
    convert_learning_rate: float | None = None  # None: learning_rate
    # The optimisation within a round (each left out of the record at its default, so older configurations stay):
    # "cosine" warms up linearly over warmup_fraction of the round's updates, then decays to final_learning_rate
    # (the DSD paper's fine-tuning: about 1e-6 to 1e-7, 5% warm-up, weight decay 5e-4).
    lr_schedule: str = "constant"
    warmup_fraction: float = 0.0
    final_learning_rate: float = 0.0
    weight_decay: float = 0.0      # Adam's L2 penalty
    # Methods that learn from images (needs_data): the share beta of the self-distillation term in
    # (1 - beta) * v-loss on the images + beta * max(SNR, 1) * self term (the DSD paper's Eq. 1 form).
    anchor_weight: float = 0.15
    # Where their images come from: "data", the task's training images (`distill` only), or "samples", a pool of
    # anchor_images samples of the input model (DDIM at from_steps, the sampler the distillation starts from): all
    # that a continual learner has of its earlier tasks (teacher_accel).
    anchor_source: str = "data"
    anchor_images: int = 1024
    # "halving" (64 -> 32 -> ... -> the target) or "neighbours": one round on the from_steps grid whose updates
    # train consecutive steps (the DSD paper's DSDN), its model then sampled with target_steps. Self-taught only.
    schedule: str = "halving"

    def __post_init__(self):
        for name in ("target_steps", "from_steps", "updates", "batch_size", "convert_updates", "anchor_images"):
            value = getattr(self, name)
            if value is None and name in OMITTED_WHEN_NONE:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        for name in ("learning_rate", "convert_learning_rate"):
            value = getattr(self, name)
            if value is None and name in OMITTED_WHEN_NONE:
                continue
            if not value > 0 or value == float("inf"):
                raise UserError(f"--{name.replace('_', '-')} must be positive and finite, got {value}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise UserError(f"--ema-decay must lie strictly between 0 and 1 (0 turns it off), got {self.ema_decay}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise UserError(f"--warmup-fraction must lie in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.final_learning_rate <= self.learning_rate:
            raise UserError(f"--final-learning-rate must lie in [0, --learning-rate], got {self.final_learning_rate}")
        if not 0.0 <= self.weight_decay < float("inf"):
            raise UserError(f"--weight-decay must be >= 0 and finite, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 < self.anchor_weight <= 1.0:
            raise UserError(f"--anchor-weight must lie in (0, 1] (1: no data term), got {self.anchor_weight}")
        if self.anchor_source not in ANCHOR_SOURCES:
            raise UserError(f"--anchor must be one of {', '.join(ANCHOR_SOURCES)}, got {self.anchor_source!r}")

    def to_dict(self, recorded_anchor: bool = False) -> dict:
        """The recorded options: unset conversion settings and the defaults added since are left out, so the
        configurations (and hashes) made before they existed stay; the anchor's settings only for a method that
        uses it (`recorded_anchor`), its source and pool only when it is not the task's images."""
        d = {k: v for k, v in asdict(self).items() if not (v is None and k in OMITTED_WHEN_NONE)}
        for key, default in ADDED_DEFAULTS.items():
            if d[key] == default:
                del d[key]
        if not recorded_anchor or self.anchor_source == "data":
            del d["anchor_source"], d["anchor_images"]
        if not recorded_anchor:
            del d["anchor_weight"]
        return d

    def updates_in(self, round_: Round) -> int:
        return self.convert_updates if round_.converts and self.convert_updates else self.updates

    def learning_rate_in(self, round_: Round) -> float:
        return self.convert_learning_rate if round_.converts and self.convert_learning_rate else self.learning_rate

    def learning_rate_at(self, round_: Round, update: int) -> float:
        """The learning rate of `update` (0-based) of a round: constant, or warm-up then cosine decay."""
        peak = self.learning_rate_in(round_)
        if self.lr_schedule == "constant":
            return peak
        total = self.updates_in(round_)
        warmup = int(self.warmup_fraction * total)
        if update < warmup:
            return peak * (update + 1) / warmup
        progress = (update - warmup) / max(1, total - warmup)
        final = min(self.final_learning_rate, peak)
        return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))


OMITTED_WHEN_NONE = ("convert_updates", "convert_learning_rate")
ADDED_DEFAULTS = {"lr_schedule": "constant", "warmup_fraction": 0.0, "final_learning_rate": 0.0, "weight_decay": 0.0,
                  "schedule": "halving"}
SCHEDULES = ("halving", "neighbours")
LR_SCHEDULES = ("constant", "cosine")
ANCHOR_SOURCES = ("data", "samples")


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def halving_rounds(from_steps: int, target_steps: int, self_taught: bool = False) -> list[Round]:
    """from -> from / 2 -> ... -> target, from = target x a power of two (a one-line error otherwise): 4 -> 2 on
    Fashion-MNIST, 20 -> 10 for CIFAR-10's teacher. Each round's student grid is every other point of its teacher's
    (trailing spacing of an even step count), so any even count can be halved, not only powers of two."""
    if target_steps < 1:
        raise UserError(f"--target-steps must be at least 1, got {target_steps}")
    if target_steps >= from_steps:
        raise UserError(f"--target-steps {target_steps} must be smaller than the teacher's steps (--from-steps "
                        f"{from_steps}): each round halves them")
    if from_steps % target_steps or not is_power_of_two(from_steps // target_steps):
        raise UserError(f"--from-steps must be --target-steps ({target_steps}) times a power of two (each round "
                        f"halves the steps), got {from_steps}")
    if from_steps > 1000:
        raise UserError(f"--from-steps must be at most the schedule's 1000 timesteps, got {from_steps}")
    rounds, steps = [], from_steps
    while steps > target_steps:
        rounds.append(Round(steps, steps // 2, self_taught))
        steps //= 2
    return rounds


def plan_rounds(method: type[DistillMethod], options: DistillOptions, teacher_prediction: str) -> list[Round]:
    """The method's rounds, with a conversion round of their own first when options.convert_updates asks for one
    and the teacher's prediction type is not the student's."""
    rounds = method.rounds(options.from_steps, options.target_steps, teacher_prediction)
    if options.schedule == "neighbours":
        if not method.trains_neighbours:
            raise UserError(f"--schedule neighbours is a schedule of dsd's, not of {method.name}'s")
        if options.from_steps % 2 or options.target_steps >= options.from_steps:
            raise UserError(f"--schedule neighbours trains on the grid of --from-steps (even, above --target-steps "
                            f"{options.target_steps}), got {options.from_steps}")
        conversion = [r for r in rounds[:1] if r.converts]
        rounds = conversion + [Round(options.from_steps, options.from_steps // 2, self_taught=True,
                                     neighbours_to=options.target_steps)]
    if options.convert_updates and teacher_prediction != STUDENT_PREDICTION and not rounds[0].converts:
        rounds = [Round(options.from_steps, options.from_steps)] + rounds
    return rounds


class DistillMethod:
    """Base of the distillation methods (see the module's docstring)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    forwards_per_update: ClassVar[int] = 0
    # Whether its self-taught rounds learn from images (the engine's `anchor`) instead of the data-free chains.
    needs_data: ClassVar[bool] = False
    # Whether it can run the "neighbours" schedule (its update then trains consecutive steps of one grid).
    trains_neighbours: ClassVar[bool] = False

    @classmethod
    def uses_data(cls, round_: Round) -> bool:
        return cls.needs_data and round_.self_taught

    @classmethod
    def rounds(cls, from_steps: int, target_steps: int, teacher_prediction: str) -> list[Round]:
        raise NotImplementedError

    @staticmethod
    def update(engine: Distillation, z: torch.Tensor, pos: torch.Tensor,
               round_: Round) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to minimise, the chains after the round's `stride` teacher steps: where they continue)."""
        raise NotImplementedError
