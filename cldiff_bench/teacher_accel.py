"""Teacher accelerators (option teacher_accel, gr and gd): before the first replay of a task, the frozen teacher is
distilled down to teacher_steps by a data-free distillation method of the run's registry (pd, dsd or a plugin's;
cldiff_bench/distill), and the replay samples are drawn from the distilled copy. Targets that ask the teacher's
prediction (gd) still ask the frozen teacher itself: a distilled model's output at a timestep is a jump to the next
of its few steps, not the denoiser the student learns. The distillation is data-free (no earlier task's images)
and its cost is the run's: the phase teacher_distillation and teacher NFEs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tqdm import tqdm

from .errors import UserError, unknown_name
from .strategy import Option

if TYPE_CHECKING:
    from torch import nn

    from .core import DiffusionCore
    from .distill import DistillMethod
    from .registry import Registry
    from .strategy import Batch
    from .teacher import TeacherStrategy

# The accelerator's options, recorded only when one is used (so runs without it keep their configurations).
# Its values are checked against the run's registry (`accelerator_method`), not a fixed list: a plugin's method
# accelerates a teacher as the built-in ones do.
TEACHER_ACCEL = Option("none", "distil the teacher down to teacher_steps before replay: none, or a registered "
                       "data-free distillation method (pd: progressive distillation, dsd: direct self-distillation, "
                       "a plugin's; `cldiff-bench list`)", omit_default=True, names_variant=True)
# One halving round from twice the teacher's steps, at 600 updates and learning rate 1e-3: measured on fmnist-5's
# task-0 model (seed 0), 2-step FID 26 against plain DDIM's 42, in 132 s on one thread. Longer chains lose it: from
# 16 down to 2 the student's FID was 42-44 at every step count, the error made where the epsilon teacher's first
# steps (alpha_bar = 0 at t = 999) are turned into a v student's.
TEACHER_ACCEL_FROM = Option(4, "teacher_accel: the teacher's steps its first round starts from (teacher_steps "
                            "times a power of two; 20 on CIFAR-10, one round to its 10)", per_stream={"cifar10-5": 20},
                            minimum=1, omit_default=True)
TEACHER_ACCEL_UPDATES = Option(600, "teacher_accel: updates per round (batch: the run's batch size)", minimum=1,
                               omit_default=True)
TEACHER_ACCEL_CONVERT = Option(0, "teacher_accel: updates of a conversion round of its own, turning the epsilon "
                               "teacher into a v model before the halving (0: within the first round, as pd does)",
                               minimum=0, omit_default=True)
# 1e-3, not distill's 1e-4 (Salimans & Ho's, for rounds of tens of thousands of updates): rounds of a few hundred
# updates at 1e-4 leave the student far from its teacher (fmnist-5 task 0: FID 81 at 8 steps against DDIM's 18).
TEACHER_ACCEL_LEARNING_RATE = Option(1e-3, "teacher_accel: Adam's learning rate of every round", minimum=0.0,
                                     omit_default=True)
TEACHER_ACCEL_OPTIONS = {"teacher_accel": TEACHER_ACCEL, "teacher_accel_from": TEACHER_ACCEL_FROM,
                         "teacher_accel_updates": TEACHER_ACCEL_UPDATES,
                         "teacher_accel_convert_updates": TEACHER_ACCEL_CONVERT,
                         "teacher_accel_learning_rate": TEACHER_ACCEL_LEARNING_RATE}
PURPOSE_TEACHER_ACCEL = 4  # keys the accelerator's noise with (seed, task); after strategy.py's replay purposes


def accelerator_method(registry: Registry | None, name: str) -> type[DistillMethod]:
    """The distillation method `name` (option teacher_accel) among those `registry` holds that need no images: a
    teacher strategy keeps none of an earlier task's."""
    if registry is None:
        raise ValueError("this strategy was built without the run's registry (see strategy.build_strategy)")
    methods = registry.entries("distiller")
    data_free = sorted(n for n, entry in methods.items() if not entry.obj.needs_data)
    if name in methods and name not in data_free:
        raise UserError(f"option teacher_accel: the distillation method {name!r} learns from images, which a teacher "
                        f"strategy has none of; data-free ones: none, {', '.join(data_free)}")
    if name not in data_free:
        raise unknown_name("teacher accelerator (option teacher_accel)", name, ["none", *data_free])
    return methods[name].obj


def check_accelerator_settings(strategy: TeacherStrategy) -> None:
    """Refuse the settings of `strategy`'s accelerator that no distillation could run with, when it is built."""
    from .distill import halving_rounds
    try:
        halving_rounds(strategy.option("teacher_accel_from"), strategy.option("teacher_steps"))
    except UserError as exc:
        raise UserError(f"teacher_accel {strategy.teacher_accel}: {exc} (options teacher_accel_from and "
                        f"teacher_steps)") from None
    if strategy.option("teacher_eta") != 0:
        raise UserError("teacher_accel distils deterministic DDIM steps: teacher_eta must be 0")
    if not strategy.option("teacher_accel_learning_rate") > 0:
        raise UserError("option teacher_accel_learning_rate must be positive")


def distil_teacher(strategy: TeacherStrategy, batch: Batch) -> nn.Module:
    """`strategy`'s frozen teacher distilled down to teacher_steps by its accelerator, at the batch size of `batch`
    and with noise keyed by its seed and the task."""
    from .distill import DistillOptions, accelerate_teacher
    options = DistillOptions(method=strategy.teacher_accel, target_steps=strategy.option("teacher_steps"),
                             from_steps=strategy.option("teacher_accel_from"),
                             updates=strategy.option("teacher_accel_updates"), batch_size=len(batch.x0),
                             learning_rate=strategy.option("teacher_accel_learning_rate"),
                             convert_updates=strategy.option("teacher_accel_convert_updates") or None)
    teacher = strategy.teacher
    state = {k: v.float() for k, v in teacher.state_dict().items()}
    distilled, record = accelerate_teacher(
        strategy.core, state, teacher.config, accelerator_method(strategy.registry, strategy.teacher_accel), options,
        keys=(batch.seed, PURPOSE_TEACHER_ACCEL, strategy.task))
    tqdm.write(f"task {strategy.task}: teacher distilled with {strategy.teacher_accel}, "
               + ", ".join(f"{r['teacher_steps']}->{r['student_steps']} steps (loss {r['mean_loss']:.4g})"
                           for r in record["rounds"]))
    return distilled


def restored_distilled_teacher(core: DiffusionCore, state_dict: dict) -> nn.Module:
    """A distilled teacher saved in a strategy's state, frozen again as the prediction type distillation gave it."""
    from .distill.objective import student_config
    return core.frozen_copy(state_dict, role="teacher", config=student_config(core.config))
