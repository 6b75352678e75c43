"""Direct self-distillation: the model distils into itself, with no teacher copy. The target is two consecutive
DDIM steps of the current model (no gradient), the prediction the same model's one double-size step; the steps
halve each round as in progressive distillation, and the weights sampled are an EMA of the trained ones.

The two steps and the double step start from the same (z_t, t), so one forward (with gradient) serves both: its
output, detached, takes the first of the two steps, and one more forward without gradient the second. Per update
and image: 2 network evaluations, 1 backward, one model in memory.

Self-consistency alone has no anchor: a model whose output does not yet mean v would only agree with itself. So
when the input model is not a v model, a first conversion round teaches a v student one step for one step of the
frozen input model (2 evaluations per update too, the only round with a teacher copy), at the starting steps.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..diffusion.parameterisation import x0_and_eps
from .base import DistillMethod, Round, halving_rounds
from .objective import STUDENT_PREDICTION, at, pd_target, transition, weighted_x_loss
from .pd import taught_update

if TYPE_CHECKING:
    from .engine import Distillation


def self_taught_update(engine: Distillation, z: torch.Tensor, pos: torch.Tensor,
                       round_: Round) -> tuple[torch.Tensor, torch.Tensor]:
    _, ab = engine.grid
    a0, a1, a2 = at(ab, pos, z), at(ab, pos + 1, z), at(ab, pos + 2, z)
    x0, eps = x0_and_eps(engine.student_output(z, pos), z, a0, STUDENT_PREDICTION)
    with torch.no_grad():
        # The model's own first step (its x0 clipped, as the sampler does), then its second: the target.
        z_mid = transition(x0.detach().clamp(-1.0, 1.0), eps.detach(), a1)
        z_end = engine.path_step(engine.model, STUDENT_PREDICTION, z_mid, pos + 1)
        target = pd_target(z, z_end, a0, a2)
    return weighted_x_loss(x0, target, ab[pos]), z_end


class DirectSelfDistillation(DistillMethod):
    name = "dsd"
    description = ("direct self-distillation: the model's two DDIM steps (no gradient) are the target of its own "
                   "double step; 2 network evaluations per update, one model in memory")
    forwards_per_update = 2

    @classmethod
    def rounds(cls, from_steps: int, target_steps: int, teacher_prediction: str) -> list[Round]:
        halving = halving_rounds(from_steps, target_steps, self_taught=True)
        if teacher_prediction == STUDENT_PREDICTION:
            return halving
        return [Round(from_steps, from_steps)] + halving

    @staticmethod
    def update(engine: Distillation, z: torch.Tensor, pos: torch.Tensor,
               round_: Round) -> tuple[torch.Tensor, torch.Tensor]:
        if round_.self_taught:
            return self_taught_update(engine, z, pos, round_)
        return taught_update(engine, z, pos, round_)
