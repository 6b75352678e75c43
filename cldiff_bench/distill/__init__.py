"""Few-step students of a diffusion model: progressive distillation (pd) and direct self-distillation (dsd).

`cldiff-bench distill` distils a saved model (runner.py); the teacher strategies' option teacher_accel distils
their frozen teacher before replay (`accelerate_teacher`). Methods are plugins on the `cldiff_bench_distillers`
hook; the built-in ones are registered by the built-in plugin.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import DistillMethod, DistillOptions, Round, halving_rounds, is_power_of_two
from .dsd import AnchoredSelfDistillation, DirectSelfDistillation
from .pd import ProgressiveDistillation

if TYPE_CHECKING:
    import torch

    from ..core import DiffusionCore
    from ..diffusion.unet import UNetConfig

BUILTIN_METHODS: dict[str, type[DistillMethod]] = {m.name: m for m in (ProgressiveDistillation,
                                                                      DirectSelfDistillation,
                                                                      AnchoredSelfDistillation)}

__all__ = ["AnchoredSelfDistillation", "BUILTIN_METHODS", "DirectSelfDistillation", "DistillMethod", "DistillOptions",
           "ProgressiveDistillation", "Round", "accelerate_teacher", "halving_rounds", "is_power_of_two"]


def accelerate_teacher(core: DiffusionCore, teacher_state: dict, teacher_config: UNetConfig,
                       method: type[DistillMethod], options: DistillOptions, keys: tuple[int, ...],
                       sampler: torch.nn.Module | None = None) -> tuple[torch.nn.Module, dict]:
    """A frozen copy of the teacher distilled by `method` down to options.target_steps, and the distillation's
    record. Its work is charged to the phase teacher_distillation and its network evaluations to the teacher's
    count (the trained copy's forwards too: it is the teacher's cost, not the student's). A method that learns
    from images learns from options.anchor_images samples of `sampler` (the frozen teacher) at options.from_steps."""
    from ..diffusion.unet import UNet
    from .anchor import sample_pool
    from .engine import Distillation
    from .objective import student_config

    with core.meter.phase("teacher_distillation"):
        anchor = None
        if method.needs_data:
            if sampler is None:
                raise ValueError(f"{method.name} learns from images: pass the model to draw them from (sampler)")
            anchor = sample_pool(core, sampler, options.from_steps, options.anchor_images, keys)
        model = UNet(student_config(teacher_config)).to(core.device)
        model.load_state_dict(teacher_state)
        core.meter.watch(model, "teacher")
        engine = Distillation(core, method, options, teacher_config, model, keys, anchor=anchor)
        engine.run()
        accelerated = core.frozen_copy(model.state_dict(), role="teacher", config=engine.student_config)
    record = {"method": method.name, "options": options.to_dict(method.needs_data), "rounds": engine.records}
    return accelerated, record
