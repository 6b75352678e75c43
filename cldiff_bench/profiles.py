"""Budgets: how big the model is, how long each task trains, and how much the evaluation samples.

`paper` is the study's budget (per stream); `small` is sized for a CPU (real data, minutes per task) and `tiny`
is a smoke test (a whole run in well under two minutes on two CPU cores).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .errors import unknown_name
from .registry.specs import StreamSpec

STUDY_LEARNING_RATE = 2e-4


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


PROFILES: dict[str, Profile] = {
    "paper": Profile(
        "paper", "the study's budget: 100 epochs at batch 128 (Fashion-MNIST), 200 at 64 (CIFAR-10), paper U-Nets, "
        "10,000 samples for the metrics with torch-fidelity's Inception",
        model=None, epochs=None, batch_size=None,
        evaluation=dict(extractor="inception", num_generated=10000, batch_size=500, classifier_arch="resnet18",
                        classifier_epochs=15, solver_epochs=5)),
    "small": Profile(
        "small", "CPU-sized: 1.1M-parameter U-Net, 100 iterations per task at batch 64 with learning rate 1e-3, "
        "1,000 samples for the metrics with the evaluation classifier's features; the solver sees 1,000 images "
        "per task (and as many replay images)",
        model="small", epochs=None, batch_size=64, iterations=100, learning_rate=1e-3,
        evaluation=dict(extractor="classifier", num_generated=1000, batch_size=250, classifier_arch="cnn",
                        solver_epochs=1, solver_max_images=1000)),
    "tiny": Profile(
        "tiny", "smoke test: 0.3M-parameter U-Net, 2 epochs per task at batch 32, 200 samples for the metrics "
        "drawn with 4 DDIM steps",
        model="tiny", epochs=2, batch_size=32,
        evaluation=dict(extractor="classifier", num_generated=200, batch_size=200, fid_steps=4,
                        classifier_arch="cnn", solver_epochs=1),
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
            "grid_samples": profile.grid_samples}


def describe(profile: Profile) -> dict:
    return asdict(profile)
