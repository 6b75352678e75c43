"""What a run was asked for (`RunConfig`, the command line's values) and what it runs with (`RunSettings`).

`resolve_settings` merges the profile, the stream's spec and the command line's overrides and checks everything
once, before any data is read or anything is written; nothing later looks at the request again.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from .core import SpeedOptions, resolve_precision
from .diffusion.samplers import DEFAULT_SAMPLER, get_sampler
from .errors import UserError
from .io import check_writable_dir
from .paths import cache_dir as default_cache_dir
from .profiles import DEFAULT_PROFILE, evaluation_settings, get_profile, resolve_budget
from .streams.datasets import IMAGE_SIZE, resolve_data_root
from .threads import default_threads

if TYPE_CHECKING:
    from .evaluation import EvalSettings
    from .registry import Registry
    from .registry.specs import ExtractorSpec, StreamSpec


@dataclass
class RunConfig:
    strategy: str
    stream: str
    seed: int = 0
    profile: str = DEFAULT_PROFILE
    device: str = "auto"
    precision: str | None = None         # None: the profile's (fp32 | bf16); never chosen by the machine
    channels_last: str = "inference"     # see core.SpeedOptions
    threads: int | None = None           # torch threads of this run (None: one per idle core, threads.py)
    compile: bool = False
    replay_ahead: int = 1
    out: Path = Path("runs")
    data_root: str | None = None
    cache_dir: str | None = None
    strategy_options: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)  # Budget fields over the profile's (run_arguments.BUDGET)
    init_model: str | None = None        # start task 0 from these weights (see model_source.read_model)
    evaluation: dict[str, Any] = field(default_factory=dict)  # EvalSettings overrides
    evaluate: bool = True
    checkpoint_every: int = 0            # also checkpoint every N iterations inside a task (0: only after tasks)
    resume: bool = False
    force: bool = False
    progress: bool = True
    tensorboard: bool = False            # also log the losses as TensorBoard events (losses.csv is always written)


LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Budget:
    """How big the model is and how long each task trains; recorded as the result's `config.budget`."""
    profile: str
    model: str
    epochs: float | None
    batch_size: int
    iterations: int | None               # when set, replaces epochs
    learning_rate: float
    grid_samples: int
    image_size: int | None = None        # side length of the stream's images (None: the suite's 32)
    lr_schedule: str = "constant"        # constant | cosine (per task: warm-up, then cosine decay to 0)
    warmup_iterations: int = 0
    ema_decay: float | None = None       # sampling weights: an EMA of the trained ones (None: the trained ones)
    calibrated_for: str | None = None    # the stream whose own settings of the profile these are (Profile.per_stream)

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"learning-rate schedule must be one of {', '.join(LR_SCHEDULES)}, got "
                            f"{self.lr_schedule!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise UserError(f"EMA decay must lie strictly between 0 and 1, got {self.ema_decay}")
        if self.warmup_iterations < 0:
            raise UserError(f"warm-up iterations must be >= 0, got {self.warmup_iterations}")
        if self.image_size is not None and (self.image_size < 8 or self.image_size % 8):
            raise UserError(f"image size must be a multiple of 8 and at least 8, got {self.image_size}")

    def learning_rate_at(self, iteration: int, total: int) -> float:
        """The learning rate of `iteration` (0-based) of a task of `total` iterations: a function of the position
        alone, so a resumed task continues on the same curve."""
        if self.lr_schedule == "constant":
            return self.learning_rate
        warmup = min(self.warmup_iterations, max(total - 1, 0))
        if iteration < warmup:
            return self.learning_rate * (iteration + 1) / warmup
        progress = (iteration - warmup) / max(total - warmup, 1)
        return self.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))

    def task_iterations(self, n_images: int) -> tuple[int, int]:
        """(iterations of a task of n_images training images, iterations per epoch)."""
        per_epoch = math.ceil(n_images / self.batch_size)
        if self.iterations:
            return self.iterations, per_epoch
        return max(1, math.ceil(self.epochs * per_epoch)), per_epoch

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["calibrated_for"] is None:
            del d["calibrated_for"]  # recorded only where set, so the configurations made before it stay
        return d


@dataclass(frozen=True)
class RunSettings:
    """Everything one (strategy, stream, profile, seed) run needs, resolved and checked."""
    strategy: str
    stream: str
    seed: int
    budget: Budget
    precision: str                       # fp32 | bf16
    hflip: bool                          # the study's random horizontal flips of the training images
    evaluation: dict[str, Any]           # EvalSettings values as given: the data set's, the profile's, the run's
    eval_settings: EvalSettings | None   # None: the run is not evaluated
    fid_steps: int                       # DDIM steps of metric samples and sample grids
    speed: SpeedOptions
    strategy_options: dict[str, Any]     # the strategy's option values, defaults filled in
    variant: str                         # the run's name: the strategy's, or a variant's (gd+pd; Option.names_variant)
    device: torch.device
    data_root: Path
    cache_dir: Path
    out: Path
    init_model: str | None
    checkpoint_every: int
    resume: bool
    force: bool
    progress: bool
    tensorboard: bool
    study_seeds: tuple[int, ...] | None
    # What the registry resolved the names to (a test may replace them).
    stream_spec: StreamSpec
    strategy_cls: type
    model_preset: dict
    extractors: Mapping[str, ExtractorSpec]

    @property
    def evaluate(self) -> bool:
        return self.eval_settings is not None

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.stream / self.budget.profile / self.variant / f"seed{self.seed}"

    def recorded_evaluation(self) -> dict | None:
        return recorded_evaluation(self.evaluation) if self.evaluate else None


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {requested} requested, but no CUDA GPU is available here (use --device cpu)")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu or cuda[:N], got {requested!r}")
    return torch.device(requested)


def recorded_evaluation(settings: dict) -> dict:
    """Evaluation settings as recorded: a weights file by its name, so where it lies is not part of the identity."""
    return {k: Path(v).name if is_weights_file(k) and v else v for k, v in settings.items()}


def is_weights_file(key: str) -> bool:
    return key.endswith("_weights") or key == "ruler_file"


def _check_positive(name: str, value):
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise UserError(f"{name} must be positive (and finite), got {value}")


def _budget(cfg: RunConfig, profile, spec: StreamSpec) -> Budget:
    budget = resolve_budget(profile, spec)
    given = {k: v for k, v in cfg.budget.items() if v is not None}
    unknown = sorted(set(given) - set(budget))
    if unknown:
        raise UserError(f"not a budget setting: {', '.join(unknown)}")
    budget.update(given)
    if "epochs" in given and "iterations" not in given:
        budget["iterations"] = None  # --epochs replaces the profile's fixed iteration count
    if given.get("ema_decay") == 0:
        budget["ema_decay"] = None  # --ema-decay 0: sample the trained weights themselves
    if budget["image_size"] == IMAGE_SIZE:
        budget["image_size"] = None  # the suite's own size: one identity for both spellings
    return Budget(**budget)


def _eval_settings(values: dict) -> EvalSettings:
    from .evaluation import EvalSettings  # its metrics' packages load only for runs that evaluate
    try:
        return EvalSettings(**values)
    except TypeError as exc:
        raise UserError(f"bad evaluation setting: {exc}") from exc


def resolve_settings(cfg: RunConfig, registry: Registry) -> RunSettings:
    """The run's settings from the profile, the stream and `cfg`; every value refused here, before any work."""
    for name in ("epochs", "iterations", "batch_size", "learning_rate"):
        _check_positive(f"--{name.replace('_', '-')}", cfg.budget.get(name))
    if cfg.checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be >= 0, got {cfg.checkpoint_every}")
    spec = registry.stream(cfg.stream)
    strategy_cls = registry.strategy(cfg.strategy)
    profile = get_profile(cfg.profile, cfg.stream)
    budget = _budget(cfg, profile, spec)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision or profile.precision, device)
    # The threads are chosen here, once: a default that reads the machine's load is recorded as the number it chose.
    threads = cfg.threads if cfg.threads is not None else default_threads() if device.type == "cpu" else None
    speed = SpeedOptions(cfg.channels_last, cfg.compile, cfg.replay_ahead, threads)
    if threads:
        torch.set_num_threads(threads)
    cache = check_writable_dir(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(), "the cache directory")
    check_writable_dir(cfg.out, "--out")
    if cfg.data_root is not None and not Path(cfg.data_root).expanduser().is_dir():
        raise UserError(f"--data-root {cfg.data_root} does not exist")
    options = strategy_cls.resolve_options(cfg.stream, cfg.strategy_options, profile.option_defaults)
    # Names of plugins (teacher_accel) refused before any work, and settings the plugin named does not use left out.
    options = strategy_cls.registered_options(options, registry)
    preset = registry.model_preset(budget.model)
    evaluation = {**evaluation_settings(profile, spec), **cfg.evaluation}
    get_sampler(evaluation.get("sampler", DEFAULT_SAMPLER), registry.samplers())
    return RunSettings(
        strategy=cfg.strategy, stream=cfg.stream, seed=cfg.seed, budget=budget, precision=precision,
        # Flips the study applies to this data set's training images (CIFAR-10), at the profiles that follow it.
        hflip=bool(profile.study_augmentation and spec.study_hflip),
        evaluation=evaluation, eval_settings=_eval_settings(evaluation) if cfg.evaluate else None,
        fid_steps=evaluation["fid_steps"], speed=speed, strategy_options=options,
        variant=strategy_cls.variant(cfg.stream, options), device=device,
        data_root=resolve_data_root(cfg.data_root), cache_dir=cache, out=Path(cfg.out), init_model=cfg.init_model,
        checkpoint_every=cfg.checkpoint_every, resume=cfg.resume, force=cfg.force, progress=cfg.progress,
        tensorboard=cfg.tensorboard, study_seeds=tuple(profile.study_seeds) if profile.study_seeds else None,
        stream_spec=spec, strategy_cls=strategy_cls, model_preset=preset, extractors=registry.extractors())
