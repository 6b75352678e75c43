"""Budgets: how big the model is, how long each task trains, and how much the evaluation samples.

`paper` is the study's budget (per stream); `small` is sized for a CPU (real data, minutes per task) and `tiny`
is a smoke test (a whole run in well under two minutes on two CPU cores).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import unknown_name
from .registry.specs import StreamSpec

STUDY_LEARNING_RATE = 2e-4
DEFAULT_PROFILE = "cpu"


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


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        "paper", "the study's experiment: 100 epochs at batch 128 (Fashion-MNIST), 200 at 64 (CIFAR-10, random "
        "flips), paper U-Nets in float32, 10,000 samples for the metrics with torch-fidelity's Inception, the "
        "study's KLD classifier (ImageNet ResNet-18, 100 epochs) and solver (SimpleCNN, 20 epochs, 128 + 128 per "
        "batch, its KD term); reproduce the study with --seeds 42,69,1714",
        model=None, epochs=None, batch_size=None, study_augmentation=True, study_seeds=(42, 69, 1714),
        evaluation=dict(extractor="inception", num_generated=10000, batch_size=500,
                        classifier_arch="resnet18-imagenet", classifier_epochs=100,
                        solver_arch="simple-cnn", solver_epochs=20, solver_batch_size=128, solver_lr=1e-3,
                        kd_direction="original-reversed")),
    "cpu": Profile(
        "cpu", "the CPU leaderboard's budget, calibrated so that the board separates the lower bound (naive) from "
        "the upper bound (joint): images at 16 x 16, 1.1M-parameter U-Net, 600 iterations per task at batch 64, "
        "learning rate 2e-3 with a 50-iteration warm-up and cosine decay per task, sampling from an EMA of the "
        "weights (decay 0.995); 1,000 samples for the metrics with the evaluation classifier's features; the "
        "solver trains 2 epochs of 3,000 images per task (and as many replay images). Not the study's budget",
        model="small", epochs=None, batch_size=64, iterations=600, learning_rate=2e-3,
        image_size=16, lr_schedule="cosine", warmup_iterations=50, ema_decay=0.995,
        evaluation=dict(extractor="classifier", num_generated=1000, batch_size=250, solver_epochs=2,
                        solver_max_images=3000)),
    "small": Profile(
        "small", "CPU-sized: 1.1M-parameter U-Net, 100 iterations per task at batch 64 with learning rate 1e-3, "
        "1,000 samples for the metrics with the evaluation classifier's features; the solver sees 1,000 images "
        "per task (and as many replay images)",
        model="small", epochs=None, batch_size=64, iterations=100, learning_rate=1e-3,
        evaluation=dict(extractor="classifier", num_generated=1000, batch_size=250, solver_epochs=1,
                        solver_max_images=1000)),
    "tiny": Profile(
        "tiny", "smoke test: 0.3M-parameter U-Net, 2 epochs per task at batch 32, 200 samples for the metrics "
        "drawn with 4 DDIM steps",
        model="tiny", epochs=2, batch_size=32,
        evaluation=dict(extractor="classifier", num_generated=200, batch_size=200, fid_steps=4, solver_epochs=1),
        grid_samples=16),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise unknown_name("profile", name, PROFILES)
    return PROFILES[name]


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
            "ema_decay": profile.ema_decay}


def evaluation_settings(profile: Profile, spec: StreamSpec) -> dict:
    """EvalSettings values of `profile` on the stream `spec`: the data set's own (metric sampling steps, the
    evaluation classifier's epochs, hold-out share and flips), then the profile's."""
    return {"fid_steps": spec.fid_steps, "classifier_epochs": spec.evaluator_epochs,
            "classifier_holdout": spec.evaluator_holdout, "classifier_flip": spec.mirror_invariant,
            **profile.evaluation}


def describe(profile: Profile) -> dict:
    return asdict(profile)
