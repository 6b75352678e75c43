"""Budgets: how big the model is, how long each task trains, and how much the evaluation samples.

`paper` is the study's budget (per stream); `small` is sized for a CPU (real data, minutes per task) and `tiny`
is a smoke test (a whole run in well under two minutes on two CPU cores).
"""
from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field, replace

from .errors import unknown_name
from .registry.specs import StreamSpec

STUDY_LEARNING_RATE = 2e-4
DEFAULT_PROFILE = "cpu"
# Teacher-accelerator updates per distillation round below the cpu/paper default (600): in proportion to the
# profile's training, so the accelerator stays a minor share of the run's time.
SMALL_ACCELERATOR_UPDATES = 100
TINY_ACCELERATOR_UPDATES = 20
CPU_EVALUATION = dict(extractor="classifier", num_generated=1000, batch_size=250, solver_epochs=2,
                      solver_max_images=3000)
CIFAR10_CPU_ITERATIONS = 400  # per task (benchmarks/calibrate_cpu_profile.py --stream cifar10-5)
CIFAR10_CPU_NOTE = ("at this budget CIFAR-10 models draw textures, not objects: on the board the bounds are level "
                    "on FID, KLD and ARD, and replay leaves accuracy at naive's (docs/rulers.md); the study's "
                    "CIFAR-10 experiment is --profile paper, on a GPU")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    model: str | None              # None: the stream's paper model
    epochs: float | None           # per task; None: the stream's paper epochs
    batch_size: int | None         # None: the stream's paper batch size
    iterations: int | None = None  # a fixed number of iterations per task instead of epochs
    learning_rate: float | None = None  # None: the study's
    evaluation: dict = field(default_factory=dict)  # EvalSettings overrides
    grid_samples: int = 64
    # Fixed by the profile, never by the machine, so the same command gives comparable results on every CPU.
    precision: str = "fp32"
    # The study's training-data augmentation: random horizontal flips where the stream's spec has them (CIFAR-10).
    study_augmentation: bool = False
    # Seeds to reproduce the study's runs with (recorded, and shown by `cldiff-bench list`).
    study_seeds: tuple[int, ...] | None = None
    # Budget choices that are not the study's, each recorded in the result's config.budget:
    image_size: int | None = None       # train and evaluate at this side length (None: the suite's 32 x 32)
    lr_schedule: str = "constant"       # "constant" (the study's) or "cosine": warm-up, then cosine decay to 0
    warmup_iterations: int = 0          # linear warm-up at the start of every task (cosine schedule)
    ema_decay: float | None = None      # sample from an exponential moving average of the weights (None: off)
    # The budgets strategies spend beyond training, as defaults of their options (the user's -o still wins): so a
    # run at `tiny` with any option finishes in about the time `tiny` does. Options a strategy does not declare
    # are ignored; a value equal to the option's own default changes no configuration.
    option_defaults: dict = field(default_factory=dict)
    # Printed when a run at this profile starts: what its numbers can and cannot show.
    start_note: str = ""
    # stream name -> the fields this profile sets otherwise on that stream: a budget calibrated per data set (the
    # `cpu` board's CIFAR-10 needs other settings than its Fashion-MNIST). See `for_stream`.
    per_stream: dict = field(default_factory=dict)
    calibrated_for: str | None = None  # set by `for_stream` where the stream has settings of its own

    def for_stream(self, stream: str | None) -> "Profile":
        """This profile as it runs on `stream`: its per-stream settings applied (itself where there are none)."""
        overrides = self.per_stream.get(stream) if stream else None
        if not overrides:
            return self
        return replace(self, per_stream={}, calibrated_for=stream, **overrides)


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        "paper", "the study's experiment: 100 epochs at batch 128 (Fashion-MNIST), 200 at 64 (CIFAR-10, random "
        "flips), paper U-Nets in float32, 10,000 samples for the metrics with torch-fidelity's Inception, the "
        "study's KLD classifier (ImageNet ResNet-18, 100 epochs) and solver (SimpleCNN, 20 epochs, 128 + 128 per "
        "batch, its KD term, on CIFAR-10 the generator's flipped images), generated images truncated to 8 bits as "
        "the study's FID does; reproduce the study with --seeds 42,69,1714",
        model=None, epochs=None, batch_size=None, study_augmentation=True, study_seeds=(42, 69, 1714),
        evaluation=dict(extractor="inception", num_generated=10000, batch_size=500,
                        classifier_arch="resnet18-imagenet", classifier_epochs=100,
                        solver_arch="simple-cnn", solver_epochs=20, solver_batch_size=128, solver_lr=1e-3,
                        kd_direction="original-reversed", generated_to_uint8="truncate")),
    "cpu": Profile(
        "cpu", "the CPU leaderboard's budget, calibrated per data set so that the board separates the lower bound "
        "(naive) from the upper bound (joint): images at 16 x 16, 1.1M-parameter U-Net, 600 iterations per task "
        "at batch 64, learning rate 2e-3 with a 50-iteration warm-up and cosine decay per task, sampling from an "
        "EMA of the weights (decay 0.995); 1,000 samples for the metrics with the evaluation classifier's "
        "features; the solver trains 2 epochs of 3,000 images per task (and as many replay images). CIFAR-10 "
        "(cifar10-5) at 32 x 32 on the same U-Net over 2 x 2 patches (small-p2), "
        f"{CIFAR10_CPU_ITERATIONS} iterations per task, the solver 4 epochs of 1,500 images per task with its replay "
        "drawn once. Not the study's budget",
        model="small", epochs=None, batch_size=64, iterations=600, learning_rate=2e-3,
        image_size=16, lr_schedule="cosine", warmup_iterations=50, ema_decay=0.995,
        evaluation=CPU_EVALUATION,
        # benchmarks/results/calibration-cpu-profile-cifar10-5.md: at 16 x 16 the pinned CIFAR-10 ruler reads
        # 0.76 of real test images right (0.86 at 32 x 32), and a 32 x 32 U-Net step costs 3.6 times a 16 x 16 one.
        # The solver's replay is drawn at the study's 20 steps there: fresh for each of 2 epochs of 3,000 images it
        # took 3.5 minutes per task, more than the training; drawn once for 4 epochs of 1,500 it is a quarter of
        # that at as many solver steps (2 epochs of 1,000 left the task-0 solver at chance).
        per_stream={"cifar10-5": dict(model="small-p2", image_size=None, iterations=CIFAR10_CPU_ITERATIONS,
                                      evaluation={**CPU_EVALUATION, "solver_epochs": 4, "solver_max_images": 1500,
                                                  "solver_replay_once": True},
                                      start_note=CIFAR10_CPU_NOTE)}),
    "small": Profile(
        "small", "CPU-sized: 1.1M-parameter U-Net, 100 iterations per task at batch 64 with learning rate 1e-3, "
        "1,000 samples for the metrics with the evaluation classifier's features; the solver sees 1,000 images "
        "per task (and as many replay images)",
        model="small", epochs=None, batch_size=64, iterations=100, learning_rate=1e-3,
        evaluation=dict(extractor="classifier", num_generated=1000, batch_size=250, solver_epochs=1,
                        solver_max_images=1000),
        option_defaults={"teacher_accel_updates": SMALL_ACCELERATOR_UPDATES}),
    "tiny": Profile(
        "tiny", "smoke test: 0.3M-parameter U-Net, 2 epochs per task at batch 32, 200 samples for the metrics "
        "drawn with 4 DDIM steps, 20 updates per round of a teacher accelerator. It checks that everything runs, "
        "not what a model learns: its sample grids are noise and its metrics near their worst",
        model="tiny", epochs=2, batch_size=32,
        evaluation=dict(extractor="classifier", num_generated=200, batch_size=200, fid_steps=4, solver_epochs=1),
        grid_samples=16, option_defaults={"teacher_accel_updates": TINY_ACCELERATOR_UPDATES},
        start_note="tiny is a smoke test: its sample grids are noise and its metrics near their worst; the "
                   "benchmark is --profile cpu"),
}


def get_profile(name: str, stream: str | None = None) -> Profile:
    """Profile `name`, as it runs on `stream` where one is given (see `Profile.per_stream`)."""
    if name not in PROFILES:
        raise unknown_name("profile", name, PROFILES)
    return PROFILES[name].for_stream(stream)


def resolve_budget(profile: Profile, spec: StreamSpec) -> dict:
    """The concrete model preset, epochs and batch size of `profile` on the stream `spec`."""
    return {"profile": profile.name,
            "model": profile.model or spec.paper_model,
            "epochs": None if profile.iterations else
            profile.epochs if profile.epochs is not None else spec.paper_epochs,
            "batch_size": profile.batch_size or spec.paper_batch_size,
            "iterations": profile.iterations,
            "learning_rate": profile.learning_rate or STUDY_LEARNING_RATE,
            "grid_samples": profile.grid_samples, "image_size": profile.image_size,
            "lr_schedule": profile.lr_schedule, "warmup_iterations": profile.warmup_iterations,
            "ema_decay": profile.ema_decay,
            # Named only where the stream has settings of its own, so the other streams' configurations stay.
            **({"calibrated_for": profile.calibrated_for} if profile.calibrated_for else {})}


def evaluation_settings(profile: Profile, spec: StreamSpec) -> dict:
    """EvalSettings values of `profile` on the stream `spec`: the data set's own (metric sampling steps, the
    evaluation classifier's epochs, hold-out share and flips), then the profile's."""
    # The architecture is named only where it is not the default, so configurations (and their hashes) of the
    # data sets that use the default stay as they were published.
    arch = {} if spec.evaluator_arch == "ruler-cnn" else {"classifier_arch": spec.evaluator_arch}
    # The study's solver learns from the same flipped experience as its generator (paper profile, CIFAR-10).
    solver_flip = {"solver_flip": True} if profile.study_augmentation and spec.study_hflip else {}
    return {"fid_steps": spec.fid_steps, "classifier_epochs": spec.evaluator_epochs,
            "classifier_holdout": spec.evaluator_holdout, "classifier_flip": spec.mirror_invariant, **arch,
            **solver_flip, **profile.evaluation}


PROFILE_COLUMNS = ["name", "image", "U-Net", "per task", "batch", "lr", "EMA", "metrics", "solver / task",
                   "accelerator"]


def profile_row(profile: Profile) -> list:
    """One line of `cldiff-bench list`'s profile table: the budget in short, the stream's own where None."""
    ev = profile.evaluation
    per_task = (f"{profile.iterations} it" if profile.iterations else
                f"{profile.epochs:g} ep" if profile.epochs is not None else "study's")
    lr = f"{profile.learning_rate or STUDY_LEARNING_RATE:g}" + (" cos" if profile.lr_schedule == "cosine" else "")
    solver = f"{ev.get('solver_epochs', 1)} ep" + (f" x {ev['solver_max_images']:,}" if ev.get("solver_max_images")
                                                    else "")
    from .teacher import TEACHER_ACCEL_UPDATES
    updates = profile.option_defaults.get("teacher_accel_updates", TEACHER_ACCEL_UPDATES.default)
    return [profile.name, f"{profile.image_size or 32} px", profile.model or "paper", per_task,
            profile.batch_size or "study's", lr, profile.ema_decay or "-",
            f"{ev.get('num_generated', 1000):,} {ev.get('extractor', 'classifier')}", solver,
            f"{updates} upd/round"]


def profile_rows(profiles) -> list[list]:
    """The profile table's rows: each profile, then each stream it is calibrated for otherwise, as `cpu @ STREAM`."""
    rows = []
    for profile in profiles:
        rows.append(profile_row(profile))
        for stream in profile.per_stream:
            row = profile_row(profile.for_stream(stream))
            rows.append([f"{profile.name} @ {stream}", *row[1:]])
    return rows


def describe_profile(profile: Profile) -> str:
    """`cldiff-bench list --profile NAME`: the description, wrapped, and every value the profile sets."""
    lines = [f"{profile.name}: " + textwrap.fill(profile.description, 110, subsequent_indent="  ")]
    for key, value in asdict(profile).items():
        if key not in ("name", "description", "start_note") and value not in (None, {}, (), ""):
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)
