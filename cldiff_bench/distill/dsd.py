"""Direct self-distillation: the model distils into itself, with no teacher copy. The target is two consecutive
DDIM steps of the current model (no gradient), the prediction the same model's one double-size step; the steps
halve each round as in progressive distillation, and the weights sampled are an EMA of the trained ones.

The two steps and the double step start from the same (z_t, t), so one forward (with gradient) serves both: its
output, detached, takes the first of the two steps, and one more forward without gradient the second. Per update
and image: 2 network evaluations, 1 backward, one model in memory.

Self-consistency alone has no anchor: a model whose output does not yet mean v would only agree with itself. So
when the input model is not a v model, a first conversion round teaches a v student one step for one step of the
frozen input model (2 evaluations per update too, the only round with a teacher copy), at the starting steps.

Two variants (docs/teacher-accelerators.md): the DSD paper's neighbours schedule (DSDN, `neighbour_update`: one
round on a fine grid that never halves), and `dsd-anchored`, whose halving rounds learn from images too
(`anchored_update`, the paper's Eq. 1).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..diffusion.parameterisation import x0_and_eps
from .base import DistillMethod, Round, halving_rounds
from .objective import STUDENT_PREDICTION, at, ddim_step, pd_target, transition, weighted_x_loss
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


def neighbour_update(engine: Distillation, z: torch.Tensor, pos: torch.Tensor,
                     round_: Round) -> tuple[torch.Tensor, torch.Tensor]:
    """The DSD paper's DSDN update on one fine grid, as its authors' code does it: the model's step from z (with
    gradient) to the next grid point, then its next step from there (no gradient); its x0 there is the target of
    its x0 at z (x-space, max(SNR, 1) weighted as every method here), and the chain moves on two points. 2 network
    evaluations per update, as dsd's."""
    t, ab = engine.grid
    a0, a1, a2 = at(ab, pos, z), at(ab, pos + 1, z), at(ab, pos + 2, z)
    x0, eps = x0_and_eps(engine.student_output(z, pos), z, a0, STUDENT_PREDICTION)
    with torch.no_grad():
        z_mid = transition(x0.detach().clamp(-1.0, 1.0), eps.detach(), a1)
        with engine.core.autocast():
            out = engine.model(z_mid, t[pos + 1]).float()
        target, _ = x0_and_eps(out, z_mid, a1, STUDENT_PREDICTION)
        z_end = ddim_step(out, z_mid, a1, a2, STUDENT_PREDICTION)
    return weighted_x_loss(x0, target.clamp(-1.0, 1.0), ab[pos]), z_end


def anchored_update(engine: Distillation, z: torch.Tensor, pos: torch.Tensor,
                    round_: Round) -> tuple[torch.Tensor, torch.Tensor]:
    """The DSD paper's Eq. 1 in a halving round: z is an image of the anchor noised at a student step start, and
    one forward (with gradient) serves both terms, so an update still costs 2 network evaluations:

        (1 - beta) * |v - v_true|^2  +  beta * max(SNR, 1) * |x0 - x~|^2

    v_true = alpha eps - sigma x of the image and its noise, x~ the x0 that lands the double step where the model's
    own two steps land (self_taught_update's target)."""
    _, ab = engine.grid
    a0, a1, a2 = at(ab, pos, z), at(ab, pos + 1, z), at(ab, pos + 2, z)
    v = engine.student_output(z, pos)
    x0, eps = x0_and_eps(v, z, a0, STUDENT_PREDICTION)
    v_true = a0.sqrt() * engine.anchor_eps - (1 - a0).sqrt() * engine.anchor_x0
    data_term = ((v - v_true) ** 2).flatten(1).mean(1).mean()
    with torch.no_grad():
        z_mid = transition(x0.detach().clamp(-1.0, 1.0), eps.detach(), a1)
        z_end = engine.path_step(engine.model, STUDENT_PREDICTION, z_mid, pos + 1)
        target = pd_target(z, z_end, a0, a2)
    beta = engine.options.anchor_weight
    return (1 - beta) * data_term + beta * weighted_x_loss(x0, target, ab[pos]), z_end


class DirectSelfDistillation(DistillMethod):
    name = "dsd"
    description = ("direct self-distillation: the model's two DDIM steps (no gradient) are the target of its own "
                   "double step; 2 network evaluations per update, one model in memory")
    forwards_per_update = 2
    trains_neighbours = True
    halving_update = staticmethod(self_taught_update)  # the update of its self-taught halving rounds

    @classmethod
    def rounds(cls, from_steps: int, target_steps: int, teacher_prediction: str) -> list[Round]:
        halving = halving_rounds(from_steps, target_steps, self_taught=True)
        if teacher_prediction == STUDENT_PREDICTION:
            return halving
        return [Round(from_steps, from_steps)] + halving

    @classmethod
    def update(cls, engine: Distillation, z: torch.Tensor, pos: torch.Tensor,
               round_: Round) -> tuple[torch.Tensor, torch.Tensor]:
        if round_.neighbours_to:
            return neighbour_update(engine, z, pos, round_)
        if round_.self_taught:
            return cls.halving_update(engine, z, pos, round_)
        return taught_update(engine, z, pos, round_)


class AnchoredSelfDistillation(DirectSelfDistillation):
    name = "dsd-anchored"
    description = ("direct self-distillation anchored to images (the DSD paper's Eq. 1): (1 - beta) x the v-loss "
                   "on images noised at the round's steps + beta x the self-distillation term on the same inputs "
                   "(--anchor-weight beta); 2 network evaluations per update")
    needs_data = True
    trains_neighbours = False
    halving_update = staticmethod(anchored_update)
