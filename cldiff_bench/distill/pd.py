"""Progressive distillation (Salimans & Ho, ICLR 2022): the student, initialised from the teacher, learns to make
one deterministic DDIM step land where two of the teacher's land; it becomes the next round's teacher and the
steps halve each round (e.g. 64 -> 32 -> ... -> the target).

Per update and image: 2 teacher evaluations (no gradient) and 1 student forward and backward. Two models in memory
(the frozen teacher and the student, with the student's optimizer state and EMA).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..diffusion.parameterisation import x0_and_eps
from .base import DistillMethod, Round, halving_rounds
from .objective import STUDENT_PREDICTION, at, pd_target, weighted_x_loss

if TYPE_CHECKING:
    from .engine import Distillation


def taught_update(engine: Distillation, z: torch.Tensor, pos: torch.Tensor,
                  round_: Round) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's one step against the teacher's `stride` steps from the chains z at grid positions pos."""
    _, ab = engine.grid
    k = round_.stride
    with torch.no_grad():
        z_end = z
        for j in range(k):
            z_end = engine.path_step(engine.teacher, engine.teacher_prediction, z_end, pos + j)
        target = pd_target(z, z_end, at(ab, pos, z), at(ab, pos + k, z))
    x0, _ = x0_and_eps(engine.student_output(z, pos), z, at(ab, pos, z), STUDENT_PREDICTION)
    return weighted_x_loss(x0, target, ab[pos]), z_end


class ProgressiveDistillation(DistillMethod):
    name = "pd"
    description = ("progressive distillation (Salimans & Ho 2022): a student matches two teacher DDIM steps with "
                   "one, then teaches the next round; 3 network evaluations per update, teacher and student in "
                   "memory")
    forwards_per_update = 3

    @classmethod
    def rounds(cls, from_steps: int, target_steps: int, teacher_prediction: str) -> list[Round]:
        # The first round also turns the teacher's prediction type into the student's (v): the x-space target does
        # not depend on it.
        return halving_rounds(from_steps, target_steps)

    update = staticmethod(taught_update)
