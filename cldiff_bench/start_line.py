"""The line a run prints when it starts: its budget, the ruler that will score it, and roughly how long it will take
on this machine, from two timings of its own U-Net (a training step and a sampling forward) and a count of the
images the strategy trains on and the teacher and the evaluation draw."""
from __future__ import annotations

import time

import torch
# Bound at import, not looked up per call: the run's own optimiser is what observers of torch.optim.Adam watch.
from torch.optim import Adam

from .diffusion.unet import UNet, count_parameters

TIMING_BATCH = 32  # small enough to time in a second on a CPU, large enough that per-call overhead is minor


def seconds_per_image(core, batch_size: int) -> tuple[float, float]:
    """(training, sampling) seconds per image of `core`'s U-Net at this machine's speed: a copy's training step
    (forward, backward, Adam) and a frozen copy's forward, each the faster of two after a warm-up. Touches neither
    the run's weights nor its random streams."""
    b = min(batch_size, TIMING_BATCH)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((b, *core.image_shape), generator=generator).to(core.device)
    t = torch.randint(0, core.num_timesteps, (b,), generator=generator).to(core.device)
    # Fresh modules, not copies: the run's own carry the cost meter's hooks, which must not count these forwards.
    student = UNet(core.config).to(core.device)
    student.load_state_dict(core.model.state_dict())
    if core.speed.channels_last == "all":
        student.to(memory_format=torch.channels_last)
    optimizer = Adam(student.parameters(), lr=1e-6)
    frozen = core.frozen_copy(role=None)

    def train_step():
        loss = (student(x, t).float() - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sample_forward():
        with torch.no_grad():
            frozen(x, t)

    return _fastest(train_step) / b, _fastest(sample_forward) / b


def _fastest(step, repeats: int = 2) -> float:
    step()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    return min(times)


def estimated_seconds(settings, context, train_s: float, sample_s: float, from_task: int = 0) -> float:
    """Seconds the run's tasks from `from_task` on should take: training, replay sampling and evaluation."""
    s, stream, cls = settings, context.stream, type(context.strategy)
    options = context.strategy.option_values
    ev = s.eval_settings
    total = 0.0
    for k in range(from_task, stream.num_tasks):
        iterations, _ = s.budget.task_iterations(len(stream.tasks[k].train))
        student, teacher = cls.iteration_images(options, k, s.budget.batch_size)
        total += iterations * (student * train_s + teacher * sample_s)
        drawn = s.budget.grid_samples
        if s.evaluate:
            drawn += ev.num_generated if ev.compute_fid else 0
            if ev.compute_accuracy and k >= 1 and cls.solver_mode == "replay":
                per_epoch = min(ev.solver_max_images or len(stream.tasks[k].train), len(stream.tasks[k].train))
                drawn += per_epoch * (1 if ev.solver_replay_once else ev.solver_epochs)
        total += drawn * s.fid_steps * sample_s
    return total


def ruler_phrase(context) -> str:
    """'scored by the pinned ruler DIGEST (test accuracy A)', or where else its ruler comes from."""
    if context.evaluator is None:
        return "not scored (--no-eval)"
    from .evaluation.classifier import ruler_record
    record = ruler_record(context.stream, context.settings.eval_settings, context.settings.cache_dir)
    origin = {"pinned": "the pinned ruler", "local": "a ruler made on this machine (not the board's)",
              "file": "the ruler given by --ruler"}.get(record.get("origin"), "no ruler at hand")
    accuracy = record.get("test_accuracy")
    return (f"scored by {origin} {record.get('weights_sha256', '')}".strip()
            + (f" (test accuracy {accuracy:.3f})" if isinstance(accuracy, float) else ""))


def model_and_budget(settings, context) -> str:
    """The model and its size, then the budget as the leaderboard states it, and the profile."""
    from .leaderboard.render import budget_phrase
    b = settings.budget
    profile = "" if b.calibrated_for else f", profile {b.profile}"  # the phrase names a calibrated one itself
    return f"{b.model} ({count_parameters(context.core.model) / 1e6:.2f}M), {budget_phrase(b.to_dict())}{profile}"


def start_line(settings, context, from_task: int = 0) -> str:
    """budget; ruler; expected time. One line."""
    train_s, sample_s = seconds_per_image(context.core, settings.budget.batch_size)
    minutes = estimated_seconds(settings, context, train_s, sample_s, from_task) / 60
    threads = torch.get_num_threads() if settings.device.type == "cpu" else None
    where = f"on this machine ({threads} thread{'s' if threads != 1 else ''})" if threads else "on this device"
    left = " for the tasks left" if from_task else ""
    return (f"budget: {model_and_budget(settings, context)}; {ruler_phrase(context)}; expect about "
            f"{_duration(minutes)}{left} {where}")


def _duration(minutes: float) -> str:
    if minutes < 1.5:
        return "a minute"
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"
