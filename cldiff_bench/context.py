"""What a run trains and scores with, built once from its settings and the registry it was given: the stream, the
diffusion core, the strategy, the evaluator, the cost meter and the loss log. `cldiff-bench run` and
`cldiff-bench evaluate` share it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from .core import DiffusionCore
from .cost import CostMeter
from .diffusion.samplers import DEFAULT_SAMPLER
from .diffusion.seeding import derive_seeds
from .diffusion.unet import UNetConfig, model_config
from .losslog import LossLog
from .model_source import fingerprint, weights_for
from .optimisation import GRAD_CLIP
from .settings import RunSettings
from .strategy import build_strategy
from .streams.base import Stream, to_uint8

if TYPE_CHECKING:
    from .evaluation import Evaluator
    from .registry import Registry
    from .strategy import Strategy

# Distinct from the training loop's data order (10) and flips (12), and from scoring's samples (13).
PURPOSE_GRID = 11

# Images of a model drawn by seed (one image per seed, each a function of its seed alone).
DrawBySeed = Callable[[list[int]], torch.Tensor]


@dataclass
class RunContext:
    settings: RunSettings
    stream: Stream
    unet_config: UNetConfig
    meter: CostMeter
    core: DiffusionCore
    strategy: Strategy
    evaluator: Evaluator | None
    loss_log: LossLog | None = None  # opened once the run directory is ready (see `open_loss_log`)

    @classmethod
    def build(cls, settings: RunSettings, registry: Registry) -> RunContext:
        """`registry`: the run's (built-ins, entry points, `--plugin` modules), where its sampler, its strategy's
        teacher accelerator and whatever else the strategy names are looked up."""
        samplers = registry.samplers()
        stream = settings.stream_spec.build(settings.data_root, settings.seed, settings.cache_dir).at_size(
            settings.budget.image_size)
        unet_config = model_config(settings.budget.model, settings.model_preset, stream.image_shape[0])
        meter = CostMeter(settings.device)
        core = DiffusionCore(unet_config, stream.image_shape, settings.device, meter, init_seed=settings.seed,
                             precision=settings.precision, speed=settings.speed,
                             ema_decay=settings.budget.ema_decay, samplers=samplers)
        if settings.init_model:
            # Read before anything is written, so a wrong file is refused at once; restored runs overwrite it.
            core.model.load_state_dict(weights_for(settings.init_model, unet_config))
            core.reset_ema()
        strategy = build_strategy(settings.strategy_cls, core, settings.strategy_options, registry)
        evaluator = _evaluator(settings, stream, meter) if settings.evaluate else None
        return cls(settings, stream, unet_config, meter, core, strategy, evaluator)

    def resolved_config(self) -> dict:
        """The run's configuration as its result and run directory record it (its hash is the run's identity)."""
        s = self.settings
        return {
            "strategy": s.strategy, "strategy_options": s.strategy_options, "stream": s.stream,
            "seed": s.seed, "budget": s.budget.to_dict(),
            "model": {"preset": s.budget.model, **self.unet_config.to_dict()},
            "precision": s.precision,
            "speed": s.speed.to_dict(),
            "optimizer": {"name": "adam", "lr": s.budget.learning_rate, "reset_per_task": True,
                          "grad_clip": GRAD_CLIP, "lr_schedule": s.budget.lr_schedule,
                          "warmup_iterations": s.budget.warmup_iterations},
            "ema": {"decay": s.budget.ema_decay, "warmup": "(1 + n) / (10 + n)"} if s.budget.ema_decay else None,
            "diffusion": {**self.core.schedule.config, "prediction": "epsilon", "loss": "mse"},
            "augmentation": {"horizontal_flip": s.hflip},
            "study_seeds": list(s.study_seeds) if s.study_seeds else None,
            "init_model": fingerprint(s.init_model) if s.init_model else None,
            "evaluation": self.recorded_evaluation(),
            "class_order": list(self.stream.class_order),
            # Only for a variant, so the configurations (and hashes) of plain runs stay what they were.
            **({"variant": s.variant} if s.variant != s.strategy else {}),
        }

    def recorded_evaluation(self) -> dict | None:
        """The evaluation settings as the configuration records them: the sampler only where it is not the
        default, so the configurations (and hashes) of runs made before it could be chosen stay."""
        recorded = self.settings.recorded_evaluation()
        if recorded is not None and recorded.get("sampler") == DEFAULT_SAMPLER:
            recorded = {k: v for k, v in recorded.items() if k != "sampler"}
        return recorded

    def open_loss_log(self, run_dir: Path, task: int, iteration: int) -> LossLog:
        # Not in `build`: its TensorBoard folder would be in the way of the run directory's checks and clearing.
        self.loss_log = LossLog(run_dir, tensorboard=self.settings.tensorboard)
        self.loss_log.open(task, iteration)
        return self.loss_log

    def draw_by_seed(self, model: torch.nn.Module) -> DrawBySeed:
        """Metric samples of `model` (a frozen copy) by seed, drawn with the evaluation's sampler and steps."""
        steps, sampler = self.settings.fid_steps, metric_sampler(self.settings)
        return lambda seeds: self.core.generate(model, list(seeds), steps, sampler=sampler)

    def evaluate(self, k: int, student: torch.nn.Module, model_state: dict) -> dict:
        """The metrics after task k of `student`, the frozen copy of `model_state`; {} when not evaluated."""
        if self.evaluator is None:
            return {}
        return self.evaluator.after_task_with_model(
            k, self.draw_by_seed(student), model_state, self.strategy.solver_mode,
            lambda previous: self.draw_by_seed(self.core.make_teacher(previous)))

    def grid_samples(self, student: torch.nn.Module) -> tuple[torch.Tensor, list[str] | None]:
        """The sample grid's uint8 images and, when evaluated, the class the evaluation classifier sees in each."""
        with self.meter.phase("evaluation"):
            # The same seeds after every task, so the grids show how the same samples change over the stream.
            seeds = derive_seeds(self.settings.budget.grid_samples, self.settings.seed, PURPOSE_GRID)
            images = to_uint8(self.draw_by_seed(student)(seeds)).cpu()
            captions = None
            if self.evaluator is not None:
                captions = [self.stream.class_names[c] for c in self.evaluator.label(images)]
        return images, captions


def metric_sampler(settings: RunSettings) -> str:
    """The registered sampler a run's metric samples and sample grids are drawn with (evaluation setting sampler)."""
    return settings.evaluation.get("sampler", DEFAULT_SAMPLER)


def _evaluator(settings: RunSettings, stream: Stream, meter: CostMeter) -> Evaluator:
    from .evaluation import Evaluator
    evaluator = Evaluator(stream, settings.eval_settings, settings.cache_dir, settings.device, settings.seed, meter,
                          progress=settings.progress, extractors=settings.extractors)
    evaluator.preflight()  # before any training: a missing weights file must not cost a task's work
    return evaluator
