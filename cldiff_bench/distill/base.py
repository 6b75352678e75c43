"""What a distillation method is: how it plans its rounds and what one update's loss is.

A method is a class registered through the `cldiff_bench_distillers` hook (as strategies are through theirs), with

    rounds(from_steps, target_steps, teacher_prediction)   the rounds from the teacher's steps down to the target
    update(engine, z, pos, round_)                          one update's loss on the chains, and where they land

and `forwards_per_update`: network evaluations per image of one update in a halving round (a backward not
counted), which the cost meter is checked against (tests/test_distill.py).
"""
from __future__ import annotations

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

    @property
    def stride(self) -> int:
        """Teacher steps per student step (2 halves, 1 only converts the prediction type)."""
        return self.teacher_steps // self.student_steps

    @property
    def converts(self) -> bool:
        """A round that only turns the teacher's prediction type into the student's."""
        return self.stride == 1

    def to_dict(self) -> dict:
        return asdict(self)


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

    def __post_init__(self):
        for name in ("target_steps", "from_steps", "updates", "batch_size", "convert_updates"):
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

    def to_dict(self) -> dict:
        # Unset conversion settings are left out, so the configurations (and hashes) made before they existed stay.
        return {k: v for k, v in asdict(self).items() if not (v is None and k in OMITTED_WHEN_NONE)}

    def updates_in(self, round_: Round) -> int:
        return self.convert_updates if round_.converts and self.convert_updates else self.updates

    def learning_rate_in(self, round_: Round) -> float:
        return self.convert_learning_rate if round_.converts and self.convert_learning_rate else self.learning_rate


OMITTED_WHEN_NONE = ("convert_updates", "convert_learning_rate")


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
    if options.convert_updates and teacher_prediction != STUDENT_PREDICTION and not rounds[0].converts:
        rounds = [Round(options.from_steps, options.from_steps)] + rounds
    return rounds


class DistillMethod:
    """Base of the distillation methods (see the module's docstring)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    forwards_per_update: ClassVar[int] = 0

    @classmethod
    def rounds(cls, from_steps: int, target_steps: int, teacher_prediction: str) -> list[Round]:
        raise NotImplementedError

    @staticmethod
    def update(engine: Distillation, z: torch.Tensor, pos: torch.Tensor,
               round_: Round) -> tuple[torch.Tensor, torch.Tensor]:
        """(the loss to minimise, the chains after the round's `stride` teacher steps: where they continue)."""
        raise NotImplementedError
