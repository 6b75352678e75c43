"""Teacher accelerators (option teacher_accel, gr and gd): before the first replay of a task, the frozen teacher is
distilled down to teacher_steps by a distillation method of the run's registry (pd, dsd, dsd-anchored or a
plugin's; cldiff_bench/distill), and the replay samples are drawn from the distilled copy. Targets that ask the
teacher's prediction (gd) still ask the frozen teacher itself: a distilled model's output at a timestep is a jump to
the next of its few steps, not the denoiser the student learns. The distillation sees no earlier task's images: a
method that learns from images (dsd-anchored) learns from a pool of the frozen teacher's own samples, drawn with
DDIM at teacher_accel_from steps. Its cost is the run's: the phase teacher_distillation and teacher NFEs.
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
                       "distillation method (pd: progressive distillation, dsd: direct self-distillation, "
                       "dsd-anchored: dsd anchored to the teacher's own samples, a plugin's; `cldiff-bench list`)",
                       omit_default=True, names_variant=True)
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
# The anchor of a method that learns from images (dsd-anchored), recorded only for such a method: the share of its
# self-distillation term and the pool of the frozen teacher's samples it learns from. 1024 samples at 4 steps cost
# 4,096 teacher evaluations, under 4% of a 4 -> 2 distillation of 450 updates per round at batch 64.
TEACHER_ACCEL_ANCHOR_WEIGHT = Option(0.15, "teacher_accel dsd-anchored: the self-distillation term's share beta, the "
                                     "v-loss on the teacher's samples taking 1 - beta (0.15: the DSD paper's)",
                                     minimum=0.0, omit_default=True)
TEACHER_ACCEL_ANCHOR_IMAGES = Option(1024, "teacher_accel dsd-anchored: samples of the frozen teacher (DDIM at "
                                     "teacher_accel_from steps) that the distillation learns from", minimum=1,
                                     omit_default=True)
TEACHER_ACCEL_ANCHOR_OPTIONS = {"teacher_accel_anchor_weight": TEACHER_ACCEL_ANCHOR_WEIGHT,
                                "teacher_accel_anchor_images": TEACHER_ACCEL_ANCHOR_IMAGES}
TEACHER_ACCEL_OPTIONS = {"teacher_accel": TEACHER_ACCEL, "teacher_accel_from": TEACHER_ACCEL_FROM,
                         "teacher_accel_updates": TEACHER_ACCEL_UPDATES,
                         "teacher_accel_convert_updates": TEACHER_ACCEL_CONVERT,
                         "teacher_accel_learning_rate": TEACHER_ACCEL_LEARNING_RATE,
                         **TEACHER_ACCEL_ANCHOR_OPTIONS}
PURPOSE_TEACHER_ACCEL = 4  # keys the accelerator's noise with (seed, task); after strategy.py's replay purposes


def accelerator_method(registry: Registry | None, name: str) -> type[DistillMethod]:
    """The distillation method `name` (option teacher_accel) among those `registry` holds."""
    if registry is None:
        raise ValueError("this strategy was built without the run's registry (see strategy.build_strategy)")
    methods = registry.entries("distiller")
    if name not in methods:
        raise unknown_name("teacher accelerator (option teacher_accel)", name, ["none", *sorted(methods)])
    return methods[name].obj


def accelerator_options(options: dict, registry: Registry) -> dict:
    """The resolved `options` with the accelerator checked against `registry`, and the anchor's settings left out
    unless its method learns from images (so that the configurations of gr+pd and the like stay as they were); an
    anchor setting given to another method is refused."""
    name = options.get("teacher_accel", "none")
    if name != "none" and accelerator_method(registry, name).needs_data:
        return options
    given = [k for k, opt in TEACHER_ACCEL_ANCHOR_OPTIONS.items() if k in options and options[k] != opt.default]
    if given:
        raise UserError(f"option {given[0]} sets the images of a teacher accelerator that learns from them "
                        f"(dsd-anchored); teacher_accel {name} learns from none")
    return {k: v for k, v in options.items() if k not in TEACHER_ACCEL_ANCHOR_OPTIONS}


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
    if not 0.0 < strategy.option("teacher_accel_anchor_weight") <= 1.0:
        raise UserError("option teacher_accel_anchor_weight must lie in (0, 1] (1: no v-loss on the samples)")


def distil_teacher(strategy: TeacherStrategy, batch: Batch) -> nn.Module:
    """`strategy`'s frozen teacher distilled down to teacher_steps by its accelerator, at the batch size of `batch`
    and with noise keyed by its seed and the task (and, for a method that learns from images, anchored to the frozen
    teacher's own samples)."""
    from .distill import DistillOptions, accelerate_teacher
    method = accelerator_method(strategy.registry, strategy.teacher_accel)
    anchor = ({"anchor_source": "samples", "anchor_weight": strategy.option("teacher_accel_anchor_weight"),
               "anchor_images": strategy.option("teacher_accel_anchor_images")} if method.needs_data else {})
    options = DistillOptions(method=strategy.teacher_accel, target_steps=strategy.option("teacher_steps"),
                             from_steps=strategy.option("teacher_accel_from"),
                             updates=strategy.option("teacher_accel_updates"), batch_size=len(batch.x0),
                             learning_rate=strategy.option("teacher_accel_learning_rate"),
                             convert_updates=strategy.option("teacher_accel_convert_updates") or None, **anchor)
    teacher = strategy.teacher
    state = {k: v.float() for k, v in teacher.state_dict().items()}
    distilled, record = accelerate_teacher(strategy.core, state, teacher.config, method, options,
                                           keys=(batch.seed, PURPOSE_TEACHER_ACCEL, strategy.task),
                                           sampler=teacher if method.needs_data else None)
    tqdm.write(f"task {strategy.task}: teacher distilled with {strategy.teacher_accel}, "
               + ", ".join(f"{r['teacher_steps']}->{r['student_steps']} steps (loss {r['mean_loss']:.4g})"
                           for r in record["rounds"]))
    return distilled


def restored_distilled_teacher(core: DiffusionCore, state_dict: dict) -> nn.Module:
    """A distilled teacher saved in a strategy's state, frozen again as the prediction type distillation gave it."""
    from .distill.objective import student_config
    return core.frozen_copy(state_dict, role="teacher", config=student_config(core.config))
