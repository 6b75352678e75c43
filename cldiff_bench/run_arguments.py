"""The arguments of a run, declared once.

`run` adds them to its parser; `sweep` takes the same ones on its command line and in its grid files and writes
them back into each cell's `run` command; `evaluate`, `score`, `oracle` and `distill` take the evaluation ones.
`run_config_from_args` is the one mapping from them to a RunConfig, so a cell and the run it starts agree on the
configuration (and on its hash). Adding a budget setting is a Budget field, the profiles' value and one row here.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import UserError

# Where a value goes: a RunConfig field, a Budget override, a strategy option or an evaluation setting.
CONFIG, BUDGET, OPTION, EVALUATION = "config", "budget", "option", "evaluation"


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


@dataclass(frozen=True)
class RunArgument:
    """One argument: its flag, how it parses, its section of `run --help`, and where its value goes."""
    flag: str                               # the long flag, e.g. --learning-rate
    help: str
    section: str = "run"                    # run | strategy | budget | evaluation | checkpoints
    into: str = CONFIG
    key: str | None = None                  # its name there (default: the flag's destination)
    kind: str = "value"                     # value | switch (store_true) | pairs (-o KEY VALUE, repeatable)
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | tuple[str, str] | None = None
    short: str | None = None
    # How the given value becomes the RunConfig's (e.g. --no-eval -> evaluate=False).
    convert: Callable[[Any], Any] | None = None
    # False: a sweep sets it for every cell itself (threads, resume, progress) or refuses it (force).
    per_cell: bool = True

    @property
    def dest(self) -> str:
        return {"--lambda": "lam"}.get(self.flag, self.flag[2:].replace("-", "_"))

    @property
    def default_value(self):
        """What the destination holds when the argument is not given."""
        return [] if self.kind == "pairs" else False if self.kind == "switch" else self.default

    @property
    def target(self) -> str:
        return self.key or self.dest

    def add_to(self, parser, suppress_default: bool = False, help: str | None = None) -> None:
        kwargs: dict[str, Any] = {"dest": self.dest, "help": help or self.help,
                                  "default": argparse.SUPPRESS if suppress_default else self.default_value}
        if self.kind == "switch":
            kwargs["action"] = "store_true"
        elif self.kind == "pairs":
            kwargs.update(nargs=2, action="append", metavar=self.metavar)
        else:
            kwargs.update(type=self.type, choices=self.choices, metavar=self.metavar)
        parser.add_argument(*([self.short] if self.short else []), self.flag, **kwargs)

    def to_argv(self, value) -> list[str]:
        if self.kind == "switch":
            return [self.flag] if value else []
        if self.kind == "pairs":
            return [a for key, item in value for a in (self.flag, str(key), str(item))]
        return [] if value is None else [self.flag, str(value)]


def _negated(value: bool) -> bool:
    return not value


RULER_HELP = ("score with this evaluation classifier (a file train-evaluator made) instead of the pinned one; results "
              "record its digest and boards keep them apart")
SECTIONS = {"strategy": "strategy options (defaults: the study's, per stream)",
            "budget": "budget overrides (defaults: the profile's)", "evaluation": "evaluation",
            "checkpoints": "checkpoints"}

RUN_ARGUMENTS: tuple[RunArgument, ...] = (
    RunArgument("--device", "auto, cpu or cuda[:N] (default auto)", default="auto"),
    RunArgument("--precision", "U-Net precision (default: the profile's, fp32); bf16 autocast is an opt-in speed-up "
                "on hardware with native bfloat16, recorded in the result", choices=("fp32", "bf16")),
    RunArgument("--threads", "threads of this run (default: one per core); give runs side by side a share each",
                type=int, metavar="N", per_cell=False),
    RunArgument("--channels-last", "NHWC U-Net weights for sampling only (default), for training too, or never",
                default="inference", choices=("off", "inference", "all")),
    RunArgument("--compile", "torch.compile the U-Nets (CUDA graphs on GPUs; compiling takes minutes on a CPU)",
                kind="switch"),
    RunArgument("--replay-ahead", "draw the teacher's replay samples of N iterations in one batch (same samples, each "
                "used once; helps a GPU that is underused at the training batch size; default 1)", type=int,
                default=1, metavar="N"),
    RunArgument("--out", "output root (default ./runs)", type=Path, default=Path("runs")),
    RunArgument("--data-root", "where data sets live (default: $CLDIFF_BENCH_DATA, else the cache dir's data/)"),
    RunArgument("--cache-dir", "caches (default: $CLDIFF_BENCH_CACHE or ~/.cache/cldiff-bench)"),
    RunArgument("--option", "set any option the strategy declares (repeatable; `cldiff-bench list --strategy NAME` "
                "lists them), e.g. -o lambda 0.5", section="strategy", into=OPTION, kind="pairs", short="-o",
                metavar=("KEY", "VALUE")),
    RunArgument("--lambda", "replay loss weight", section="strategy", into=OPTION, key="lambda", type=finite_float),
    RunArgument("--teacher-steps", "DDIM steps of the teacher's replay samples", section="strategy", into=OPTION,
                type=int),
    RunArgument("--teacher-eta", "DDIM eta of the teacher's replay samples", section="strategy", into=OPTION,
                type=finite_float),
    RunArgument("--teacher-accel", "distil the teacher down to --teacher-steps before replay with this distillation "
                "method (gr, gd; default none; `cldiff-bench list` names the registered ones)", section="strategy",
                into=OPTION, metavar="METHOD"),
    RunArgument("--model", "model preset (see `cldiff-bench list`)", section="budget", into=BUDGET),
    RunArgument("--init-model", "start from these weights instead of a random U-Net: a diffusers UNet2DModel folder, "
                "a file from `import-unet`, or a run's models/taskK.pt (of the --model preset)", section="budget",
                metavar="PATH"),
    RunArgument("--epochs", "epochs per task", section="budget", into=BUDGET, type=finite_float),
    RunArgument("--iterations", "a fixed number of iterations per task", section="budget", into=BUDGET, type=int),
    RunArgument("--batch-size", "training images per iteration", section="budget", into=BUDGET, type=int),
    RunArgument("--learning-rate", "Adam's learning rate", section="budget", into=BUDGET, type=finite_float),
    RunArgument("--lr-schedule", "learning rate over each task: constant (the study's) or cosine (warm-up, then "
                "decay to 0)", section="budget", into=BUDGET, choices=("constant", "cosine")),
    RunArgument("--warmup-iterations", "linear warm-up of the cosine schedule", section="budget", into=BUDGET,
                type=int),
    RunArgument("--ema-decay", "sample (and teach, and keep) an exponential moving average of the weights; 0 turns "
                "it off", section="budget", into=BUDGET, type=finite_float),
    RunArgument("--image-size", "train and evaluate at this side length (a multiple of 8; the suite's is 32)",
                section="budget", into=BUDGET, type=int),
    RunArgument("--no-eval", "skip the metrics (sample grids are still written)", section="evaluation",
                key="evaluate", kind="switch", convert=_negated),
    RunArgument("--extractor", "FID features: classifier, inception, inception-offline, or a plugin's (see `list`)",
                section="evaluation", into=EVALUATION),
    RunArgument("--num-generated", "generated samples for FID and KLD", section="evaluation", into=EVALUATION,
                type=int),
    RunArgument("--sampler", "draw the evaluated samples with this registered sampler (default: the profile's, "
                "ddim; see `list`)", section="evaluation", into=EVALUATION, metavar="NAME"),
    RunArgument("--inception-weights", "local weights file for the inception extractor", section="evaluation",
                into=EVALUATION),
    RunArgument("--ruler", RULER_HELP, section="evaluation", into=EVALUATION, key="ruler_file", metavar="FILE"),
    RunArgument("--classifier-weights", "torchvision's ImageNet ResNet-18 weights (resnet18-f37072fd.pth) for the "
                "paper profile's KLD classifier, where they cannot be downloaded", section="evaluation",
                into=EVALUATION, metavar="FILE"),
    RunArgument("--resume", "continue from the run directory's checkpoint", section="checkpoints", kind="switch",
                per_cell=False),
    RunArgument("--checkpoint-every", "also checkpoint every N iterations in a task", section="checkpoints",
                type=int, default=0),
    RunArgument("--force", "overwrite a run directory of another configuration", section="checkpoints",
                kind="switch", per_cell=False),
    RunArgument("--no-progress", "no progress bars (the log lines stay)", key="progress", kind="switch",
                convert=_negated, per_cell=False),
    RunArgument("--log", "per-iteration losses: losses.csv in the run directory (always), and with tensorboard also "
                "TensorBoard events in its tensorboard/ folder", key="tensorboard", default="csv",
                choices=("csv", "tensorboard"), convert=lambda log: log == "tensorboard"),
)
BY_DEST = {a.dest: a for a in RUN_ARGUMENTS}
# What a command that scores without training takes of them (evaluate, score, oracle, distill).
SCORING = ("extractor", "num_generated", "inception_weights", "ruler", "classifier_weights")
# Options naming files or folders: written absolute into a sweep cell's command (a job may start elsewhere).
PATH_DESTS = ("out", "data_root", "cache_dir", "init_model", "inception_weights", "classifier_weights", "ruler")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Every run argument, in its section of `--help`."""
    groups = {name: parser.add_argument_group(title) for name, title in SECTIONS.items()}
    for argument in RUN_ARGUMENTS:
        argument.add_to(groups.get(argument.section, parser))


def add_arguments(parser, dests: Iterable[str], helps: dict[str, str] | None = None) -> None:
    """Some of the run arguments, for another command (`helps` words a few of them for it)."""
    for dest in dests:
        BY_DEST[dest].add_to(parser, help=(helps or {}).get(dest))


def strategy_options(args) -> dict:
    """-o KEY VALUE pairs (converted by the strategy, which knows each option's type), and the named aliases."""
    options = {}
    for key, value in getattr(args, "option", None) or []:
        key = key.replace("-", "_")
        if key in options:
            raise UserError(f"option {key} is given twice")
        options[key] = value
    for argument in RUN_ARGUMENTS:
        value = getattr(args, argument.dest, None)
        if argument.into == OPTION and argument.kind == "value" and value is not None:
            if argument.target in options:
                raise UserError(f"option {argument.target} is given twice (-o {argument.target} and its named flag)")
            options[argument.target] = value
    return options


def evaluation_overrides(args) -> dict:
    """The evaluation settings given (those of the arguments this command has)."""
    if getattr(args, "num_generated", None) is not None and args.num_generated <= 0:
        raise UserError(f"--num-generated must be positive, got {args.num_generated}")
    return {a.target: getattr(args, a.dest) for a in RUN_ARGUMENTS
            if a.into == EVALUATION and getattr(args, a.dest, None) is not None}


def run_config_from_args(args, strategy: str, stream: str, seed: int, profile: str, **fixed):
    """The RunConfig of these arguments (an argparse namespace with every run argument's destination); `fixed`
    sets RunConfig fields over them (a sweep's cells: resume, no progress bars, their own threads)."""
    from .settings import RunConfig
    values: dict[str, Any] = {"budget": {}}
    for argument in RUN_ARGUMENTS:
        value = getattr(args, argument.dest)
        if argument.convert is not None:
            value = argument.convert(value)
        if argument.into == CONFIG:
            values[argument.target] = value
        elif argument.into == BUDGET and value is not None:
            values["budget"][argument.target] = value
    values.update(strategy=strategy, stream=stream, seed=seed, profile=profile,
                  strategy_options=strategy_options(args), evaluation=evaluation_overrides(args), **fixed)
    return RunConfig(**values)
