"""`cldiff-bench run` (train a strategy on a stream) and `cldiff-bench evaluate` (score a finished run again)."""
from __future__ import annotations

from pathlib import Path

from ..arguments import int_list_type, retire_output_spellings
from ..errors import UserError
from ..profiles import DEFAULT_PROFILE, PROFILES
from ..run_arguments import SCORING, add_arguments, add_run_arguments, evaluation_overrides, run_config_from_args
from . import CommandSpec


def add_run_parser_arguments(parser) -> None:
    parser.add_argument("--strategy", required=True, help="strategy name (see `cldiff-bench list`)")
    parser.add_argument("--stream", required=True, help="stream name (see `cldiff-bench list`)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="seed of the run (default 0)")
    seeds.add_argument("--seeds", type=int_list_type("seeds"), default=None,
                       help="several seeds, e.g. 0,1,2: one result each")
    parser.add_argument("--profile", default=DEFAULT_PROFILE,
                        help=f"budget: {', '.join(PROFILES)} (default {DEFAULT_PROFILE})")
    add_run_arguments(parser)
    retire_output_spellings(parser, takes_options=True)


def run_command(args, registry) -> int:
    from ..runner import run

    seeds = args.seeds if args.seeds is not None else [args.seed if args.seed is not None else 0]
    for seed in seeds:
        if seed < 0:
            raise UserError(f"--seed must be non-negative, got {seed}")
        print(run(run_config_from_args(args, args.strategy, args.stream, seed, args.profile), registry))
    return 0


def add_evaluate_arguments(parser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory (holding result.json and models/)")
    add_arguments(parser, [d for d in SCORING if d != "classifier_weights"])
    parser.add_argument("--out", type=Path, default=None, help="result file to write (default: beside the run's)")
    retire_output_spellings(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def evaluate_command(args, registry) -> int:
    from ..runner import evaluate_run
    if not (args.run_dir / "result.json").is_file():
        raise UserError(f"{args.run_dir} holds no result.json (is it a finished run directory?)")
    print(evaluate_run(args.run_dir, evaluation_overrides(args), registry, args.out, progress=not args.no_progress))
    return 0


RUN = CommandSpec("run", "train a strategy on a stream, evaluating after every task", add_run_parser_arguments,
                  run_command)
EVALUATE = CommandSpec("evaluate", "score a finished run again from its per-task models", add_evaluate_arguments,
                       evaluate_command)
