"""The strategy protocol: what a continual-learning strategy for diffusion models is, in four calls.

    begin_task(k)        set up for task k (take a teacher, ...)
    batch_loss(batch)    the loss of one batch of task k (the trainer does backward, clipping and the step)
    end_task(k)          finish task k
    state_dict() / load_state_dict(state)   everything needed to resume mid-run

plus `training_data(stream, k)` (what task k trains on: the task itself, or for `joint` the union so far).
Built-in and third-party strategies implement this protocol and are registered through the same plugin hook.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from .core import DiffusionCore
from .diffusion.parameterisation import output_for, per_sample
from .diffusion.seeding import derive_seeds, generator
from .errors import UserError
from .streams.base import ImageSet, Stream

if TYPE_CHECKING:
    from .registry import Registry

# Purposes that key the random draws of one iteration (see diffusion/seeding.py).
PURPOSE_DATA_NOISE = 1
PURPOSE_REPLAY_SAMPLES = 2
PURPOSE_REPLAY_NOISE = 3


@dataclass
class Batch:
    """One batch of the current task, with what is needed to draw this iteration's randomness reproducibly."""
    x0: torch.Tensor       # float images in [-1, 1] on the device
    labels: torch.Tensor
    task: int
    iteration: int
    seed: int
    iterations: int | None = None  # the task's iteration count, when known: work done ahead stops at its end

    def generator(self, purpose: int) -> torch.Generator:
        return generator(self.seed, self.task, self.iteration, purpose)

    def sample_seeds(self, n: int, purpose: int, iteration: int | None = None) -> list[int]:
        """n per-sample seeds of this iteration's draw (or of a later `iteration` of the same task)."""
        return derive_seeds(n, self.seed, self.task, self.iteration if iteration is None else iteration, purpose)


@dataclass
class LossTerms:
    total: torch.Tensor
    data: torch.Tensor
    replay: torch.Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        out = {"loss": float(self.total.detach()), "data_loss": float(self.data.detach())}
        if self.replay is not None:
            out["replay_loss"] = float(self.replay.detach())
        return out


@dataclass(frozen=True)
class Option:
    """A strategy option: its default, and per-stream defaults where the study used different values.

    `choices`: the values a string option takes. `omit_default`: for an option added after results were published
    (teacher_accel and its settings): while every such option of the strategy is at its default, none is in the
    resolved options, so the configurations and hashes of runs made before it existed stay the same; once one is
    set, all are recorded. Read them with `Strategy.option`. `names_variant`: a value other than the default makes
    the run a variant of the strategy named `strategy+value` (gd+pd): its own run directory and leaderboard row."""
    default: Any
    help: str
    per_stream: dict | None = None
    minimum: float | None = None
    choices: tuple | None = None
    omit_default: bool = False
    names_variant: bool = False

    def default_for(self, stream_name: str) -> Any:
        return (self.per_stream or {}).get(stream_name, self.default)

    def convert(self, name: str, value: Any) -> Any:
        """`value` (a string from the command line, or a number) as the type of the default, checked: finite,
        and not below `minimum`."""
        kind = type(self.default)
        try:
            if kind is bool:
                if isinstance(value, str):
                    if value.lower() not in _BOOLEANS:
                        raise ValueError
                    value = _BOOLEANS[value.lower()]
                value = bool(value)
            elif kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                value = int(value)
            elif kind is float:
                value = float(value)
            elif kind is str:
                value = str(value)
        except (TypeError, ValueError):
            raise UserError(f"option {name} takes {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"option {name} must be a finite number, got {value}")
        if self.minimum is not None and not isinstance(value, (bool, str)) and value < self.minimum:
            raise UserError(f"option {name} must be >= {self.minimum}, got {value}")
        if self.choices is not None and value not in self.choices:
            raise UserError(f"option {name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        return value


_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False, "on": True, "off": False}
_KIND_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}


class Strategy:
    """Base class with the protocol's defaults: train on the current task with the plain diffusion loss."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # How the evaluator's replay-trained classifier ("solver") learns alongside this strategy:
    # "replay" (generative replay from the previous model), "none" (current task only) or "joint" (union so far).
    solver_mode: ClassVar[str] = "replay"
    options: ClassVar[dict[str, Option]] = {}
    # The run's plugin registry: where plugins the options name are looked up (a teacher accelerator's distillation
    # method). `build_strategy` sets it, so the constructor keeps the protocol's two arguments.
    registry: Registry | None = None

    def __init__(self, core: DiffusionCore, options: dict[str, Any] | None = None):
        self.core = core
        self.option_values = dict(options or {})
        self.task = 0

    @classmethod
    def iteration_images(cls, options: dict[str, Any], k: int, batch_size: int) -> tuple[int, int]:
        """(images the student trains on, image forwards of frozen models) in one iteration of task k: what a run's
        start-up time estimate counts. A strategy that draws more than its batch should say so here."""
        return batch_size, 0

    # --- options -------------------------------------------------------------------------------------------------
    @classmethod
    def resolve_options(cls, stream_name: str, overrides: dict[str, Any],
                        profile_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults for this stream (and the profile's budgets, `Profile.option_defaults`), overridden by the
        user's values; unknown or out-of-range values refused."""
        unknown = sorted(k for k, v in overrides.items() if v is not None and k not in cls.options)
        if unknown:
            known = ", ".join(sorted(cls.options)) or "none"
            raise UserError(f"strategy {cls.name!r} takes no option {', '.join(unknown)} (its options: {known})")
        defaults = {k: opt.default_for(stream_name) for k, opt in cls.options.items()}
        defaults.update({k: cls.options[k].convert(k, v) for k, v in (profile_defaults or {}).items()
                         if k in cls.options})
        resolved = dict(defaults)
        for k, v in overrides.items():
            if v is not None:
                try:
                    resolved[k] = cls.options[k].convert(k, v)
                except UserError as exc:
                    raise UserError(f"strategy {cls.name!r}: {exc}") from None
        late = [k for k, opt in cls.options.items() if opt.omit_default]
        if all(resolved[k] == defaults[k] for k in late):
            for k in late:
                del resolved[k]
        return resolved

    @classmethod
    def registered_options(cls, options: dict[str, Any], registry: Registry) -> dict[str, Any]:
        """The resolved options as the run records them, given the run's `registry`: the second half of the option
        handling, which refuses values that name plugins `registry` does not hold and leaves out settings that the
        plugin named does not use. Nothing to do here; see `TeacherStrategy`."""
        return options

    @classmethod
    def variant(cls, stream_name: str, resolved: dict[str, Any]) -> str:
        """The run's name on boards and in run directories: the strategy's, with `+value` for each variant-naming
        option set away from its default (gd+pd)."""
        parts = [cls.name] + [str(resolved[k]) for k, opt in cls.options.items()
                              if opt.names_variant and k in resolved and resolved[k] != opt.default_for(stream_name)]
        return "+".join(parts)

    def option(self, name: str) -> Any:
        """This strategy's value of option `name`: the resolved one, else (an omitted option) its default."""
        if name in self.option_values:
            return self.option_values[name]
        return self.options[name].default

    # --- protocol ------------------------------------------------------------------------------------------------
    def training_data(self, stream: Stream, k: int) -> ImageSet:
        return stream.tasks[k].train

    def begin_task(self, k: int) -> None:
        self.task = k

    def batch_loss(self, batch: Batch) -> LossTerms:
        x_t, t, noise = self.core.training_targets(batch.x0, batch.generator(PURPOSE_DATA_NOISE))
        loss = F.mse_loss(self.core.model(x_t, t), self.regression_target(batch.x0, noise, t))
        return LossTerms(total=loss, data=loss)

    def regression_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the student is trained to output for x_t = q(x0, noise, t): the noise itself for an epsilon model
        (the study's), else its v or x0 (`UNetConfig.prediction`)."""
        prediction = self.core.config.prediction
        if prediction == "epsilon":
            return noise
        return output_for(prediction, x0, noise, per_sample(self.core.schedule.alpha_bar[t], x0))

    def end_task(self, k: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"task": self.task}

    def load_state_dict(self, state: dict) -> None:
        self.task = int(state["task"])

    def describe(self) -> dict:
        return {"name": self.name, "options": dict(self.option_values), "solver_mode": self.solver_mode}


def build_strategy(cls: type[Strategy], core: DiffusionCore, options: dict[str, Any], registry: Registry) -> Strategy:
    """The strategy `cls` of a run: its resolved `options` checked against the run's `registry`, which it keeps to
    look up what they name."""
    strategy = cls(core, cls.registered_options(options, registry))
    strategy.registry = registry
    return strategy
