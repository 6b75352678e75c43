"""A third-party-style distillation method: progressive distillation's halving rounds with a plain, unweighted
x-space loss (not part of the suite). It counts its updates, so a test can see it was the one that ran.

Registered in tests with `--plugin tests.plugins.halving_plugin`, exactly as a user's module would be; a teacher
strategy takes it as its accelerator with `-o teacher_accel halving`.
"""
import torch

from cldiff_bench.diffusion.parameterisation import x0_and_eps
from cldiff_bench.distill.base import DistillMethod, halving_rounds
from cldiff_bench.distill.objective import STUDENT_PREDICTION, at, pd_target
from cldiff_bench.registry import hookimpl

UPDATES: list[tuple[int, int]] = []  # (teacher steps, student steps) of every update made


class PlainHalving(DistillMethod):
    name = "halving"
    description = "progressive distillation with a plain x-space MSE (test plugin)"
    forwards_per_update = 3

    @classmethod
    def rounds(cls, from_steps, target_steps, teacher_prediction):
        return halving_rounds(from_steps, target_steps)

    @staticmethod
    def update(engine, z, pos, round_):
        UPDATES.append((round_.teacher_steps, round_.student_steps))
        _, ab = engine.grid
        with torch.no_grad():
            z_end = z
            for j in range(round_.stride):
                z_end = engine.path_step(engine.teacher, engine.teacher_prediction, z_end, pos + j)
            target = pd_target(z, z_end, at(ab, pos, z), at(ab, pos + round_.stride, z))
        x0, _ = x0_and_eps(engine.student_output(z, pos), z, at(ab, pos, z), STUDENT_PREDICTION)
        return ((x0 - target) ** 2).mean(), z_end


@hookimpl
def cldiff_bench_distillers():
    return [PlainHalving]
