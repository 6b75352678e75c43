"""The suite's side of the benchmark: the paper presets through DiffusionCore and the registered strategies, each
training iteration the runner's own step (training.training_step), not a copy of it."""
from __future__ import annotations

import itertools

import torch

from cldiff_bench.core import DiffusionCore
from cldiff_bench.diffusion.seeding import derive_seeds
from cldiff_bench.diffusion.unet import model_config
from cldiff_bench.profiles import STUDY_LEARNING_RATE
from cldiff_bench.registry import load_registry
from cldiff_bench.strategy import PURPOSE_REPLAY_SAMPLES, Batch
from cldiff_bench.training import training_step

STREAMS = {"fmnist": ("fmnist-5", "paper-fmnist", (1, 32, 32)),
           "cifar10": ("cifar10-5", "paper-cifar10", (3, 32, 32))}


def strategy_options(stream: str, name: str) -> dict:
    """The strategy's defaults on the stream (teacher steps, lambda), shared with the reference iteration."""
    cls = load_registry().strategy(name)
    return cls.resolve_options(STREAMS[stream][0], {})


class Ours:
    def __init__(self, stream: str, device: torch.device, precision: str, seed: int = 0):
        self.stream_name, preset, self.image_shape = STREAMS[stream]
        self.registry = load_registry()
        config = model_config(preset, self.registry.model_preset(preset), self.image_shape[0])
        self.core = DiffusionCore(config, self.image_shape, device, init_seed=seed, precision=precision)
        self.core.model.train()
        self.teacher = self.core.make_teacher()
        self.optimizer = torch.optim.Adam(self.core.model.parameters(), lr=STUDY_LEARNING_RATE)
        self._strategies: dict[str, object] = {}
        # Fresh keys per call, as consecutive iterations of a run draw.
        self._calls = itertools.count()

    def strategy(self, name: str):
        """The strategy as the runner has it during task 1: teacher strategies hold their frozen teacher."""
        if name not in self._strategies:
            cls = self.registry.strategy(name)
            strategy = cls(self.core, cls.resolve_options(self.stream_name, {}))
            strategy.begin_task(0)
            strategy.end_task(0)
            strategy.begin_task(1)
            self._strategies[name] = strategy
        return self._strategies[name]

    def iteration(self, name: str, x0: torch.Tensor) -> torch.Tensor:
        """One training iteration: the step train_task takes (its loss stays on the device, as in a run)."""
        strategy = self.strategy(name)
        batch = Batch(x0=x0, labels=torch.zeros(len(x0), dtype=torch.long, device=x0.device), task=strategy.task,
                      iteration=next(self._calls), seed=0)
        return training_step(self.core, strategy, batch, self.optimizer).total.detach()

    def train_step(self, x0: torch.Tensor) -> torch.Tensor:
        return self.iteration("naive", x0)

    def generate(self, n: int, steps: int, eta: float = 0.0) -> torch.Tensor:
        seeds = derive_seeds(n, 0, 1, next(self._calls), PURPOSE_REPLAY_SAMPLES)
        return self.core.generate(self.teacher, seeds, steps, eta)
