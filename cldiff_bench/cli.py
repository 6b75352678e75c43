"""Command line: `cldiff-bench run | evaluate | leaderboard | check | list | train-evaluator`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import UserError


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}")
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"seeds must be non-negative integers, got {text!r}")
    return seeds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cldiff-bench", description="Continual learning of diffusion models: "
                                     "train strategies on class-incremental streams and compare them.")
    parser.add_argument("--version", action="version", version=f"cldiff-bench {__version__}")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="also load plugins from this importable module (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train a strategy on a stream, evaluating after every task")
    run.add_argument("--strategy", required=True, help="strategy name (see `cldiff-bench list`)")
    run.add_argument("--stream", required=True, help="stream name (see `cldiff-bench list`)")
    seeds = run.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=None, help="seed of the run (default 0)")
    seeds.add_argument("--seeds", type=_seeds, default=None, help="several seeds, e.g. 0,1,2: one result each")
    run.add_argument("--profile", default="small", help="budget: paper, small or tiny (default small)")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    run.add_argument("--precision", default="auto",
                     help="U-Net precision: auto (bfloat16 autocast where supported), fp32 or bf16 (default auto)")
    run.add_argument("--channels-last", default="inference", choices=["off", "inference", "all"],
                     help="NHWC U-Net weights for sampling only (default), for training too, or never")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile the U-Nets (CUDA graphs on GPUs; compiling takes minutes on a CPU)")
    run.add_argument("--replay-ahead", type=int, default=1, metavar="N",
                     help="draw the teacher's replay samples of N iterations in one batch (same samples, each used "
                          "once; helps a GPU that is underused at the training batch size; default 1)")
    run.add_argument("--out", type=Path, default=Path("runs"), help="output root (default ./runs)")
    run.add_argument("--data-root", default=None,
                     help="where data sets live (default: $CLDIFF_BENCH_DATA, else the cache dir's data/)")
    run.add_argument("--cache-dir", default=None, help="caches (default: $CLDIFF_BENCH_CACHE or ~/.cache/cldiff-bench)")
    strat = run.add_argument_group("strategy options (defaults: the study's, per stream)")
    strat.add_argument("--lambda", dest="lam", type=float, default=None, help="replay loss weight")
    strat.add_argument("--teacher-steps", type=int, default=None, help="DDIM steps of the teacher's replay samples")
    strat.add_argument("--teacher-eta", type=float, default=None, help="DDIM eta of the teacher's replay samples")
    budget = run.add_argument_group("budget overrides (defaults: the profile's)")
    budget.add_argument("--model", default=None, help="model preset (see `cldiff-bench list`)")
    budget.add_argument("--epochs", type=float, default=None, help="epochs per task")
    budget.add_argument("--iterations", type=int, default=None, help="a fixed number of iterations per task")
    budget.add_argument("--batch-size", type=int, default=None)
    budget.add_argument("--learning-rate", type=float, default=None, help="Adam's learning rate")
    ev = run.add_argument_group("evaluation")
    ev.add_argument("--no-eval", action="store_true", help="skip the metrics (sample grids are still written)")
    ev.add_argument("--extractor", default=None, help="FID features: classifier, inception or inception-offline")
    ev.add_argument("--num-generated", type=int, default=None, help="generated samples for FID and KLD")
    ev.add_argument("--inception-weights", default=None, help="local weights file for the inception extractor")
    rel = run.add_argument_group("checkpoints")
    rel.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    rel.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N iterations in a task")
    rel.add_argument("--force", action="store_true", help="overwrite a run directory of another configuration")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")

    ev2 = sub.add_parser("evaluate", help="score a finished run again from its per-task models")
    ev2.add_argument("run_dir", type=Path, help="a run directory (holding result.json and models/)")
    ev2.add_argument("--extractor", default=None, help="FID features: classifier, inception or inception-offline")
    ev2.add_argument("--num-generated", type=int, default=None)
    ev2.add_argument("--inception-weights", default=None)
    ev2.add_argument("--output", type=Path, default=None, help="result file to write (default: beside the run's)")
    ev2.add_argument("--no-progress", action="store_true")

    lb = sub.add_parser("leaderboard", help="build the leaderboard (markdown and plots, csv or latex) from result "
                        "files, with findings: claims checked against its numbers")
    lb.add_argument("results", nargs="+", type=Path, help="result files or folders holding them")
    lb.add_argument("-o", "--output", type=Path, default=Path("leaderboard"), help="output folder")
    lb.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex"],
                    help="markdown: README.md + plots/ (default); csv: leaderboard.csv + findings.csv; "
                         "latex: leaderboard.tex (booktabs)")
    claims = lb.add_mutually_exclusive_group()
    claims.add_argument("--claims", type=Path, default=None, metavar="FILE",
                        help="check the claims in this TOML file (default: the study's, shipped with the suite)")
    claims.add_argument("--no-claims", action="store_true", help="no findings")
    lb.add_argument("--strict", action="store_true", help="a malformed result file is an error (default: skipped)")
    lb.add_argument("--produced-by", default=None, metavar="COMMAND",
                    help="the command that produced the result files, quoted in the page")
    lb.add_argument("--allow-mixed", action="store_true",
                    help="rank results of different versions or evaluation settings together, flagged")

    ck = sub.add_parser("check", help="compare a result to a reference; exit 1 when a metric got worse")
    ck.add_argument("result", type=Path)
    ck.add_argument("--against", type=Path, required=True, help="the reference result file")
    ck.add_argument("--tolerance", action="append", default=[], metavar="METRIC=ABS[+REL%]",
                    help="one-sided tolerance, e.g. fid=0+25%% (repeatable; defaults per metric)")
    ck.add_argument("--all-tasks", action="store_true", help="check every task, not only the last")

    sub.add_parser("list", help="strategies, streams, model presets and profiles, and where each comes from")

    te = sub.add_parser("train-evaluator", help="train (or show) the evaluation classifier of a stream's data set")
    te.add_argument("--stream", required=True)
    te.add_argument("--profile", default="small", help="whose classifier settings to use (default small)")
    te.add_argument("--data-root", default=None)
    te.add_argument("--cache-dir", default=None)
    te.add_argument("--device", default="auto")
    return parser


def cmd_run(args, registry) -> int:
    from .runner import RunConfig, run

    evaluation = _evaluation_overrides(args)
    seeds = args.seeds if args.seeds is not None else [args.seed if args.seed is not None else 0]
    for seed in seeds:
        if seed < 0:
            raise UserError(f"--seed must be non-negative, got {seed}")
        cfg = RunConfig(strategy=args.strategy, stream=args.stream, seed=seed, profile=args.profile,
                        device=args.device, precision=args.precision, channels_last=args.channels_last,
                        compile=args.compile, replay_ahead=args.replay_ahead, out=args.out,
                        data_root=args.data_root,
                        cache_dir=args.cache_dir,
                        strategy_options={"lambda": args.lam, "teacher_steps": args.teacher_steps,
                                          "teacher_eta": args.teacher_eta},
                        model=args.model, epochs=args.epochs, iterations=args.iterations,
                        batch_size=args.batch_size, learning_rate=args.learning_rate, evaluation=evaluation,
                        evaluate=not args.no_eval,
                        checkpoint_every=args.checkpoint_every, resume=args.resume, force=args.force,
                        progress=not args.no_progress)
        path = run(cfg, registry)
        print(path)
    return 0


def _evaluation_overrides(args) -> dict:
    if args.num_generated is not None and args.num_generated <= 0:
        raise UserError(f"--num-generated must be positive, got {args.num_generated}")
    return {k: v for k, v in {"extractor": args.extractor, "num_generated": args.num_generated,
                              "inception_weights": args.inception_weights}.items() if v is not None}


def cmd_evaluate(args, registry) -> int:
    from .runner import evaluate_run
    if not (args.run_dir / "result.json").is_file():
        raise UserError(f"{args.run_dir} holds no result.json (is it a finished run directory?)")
    print(evaluate_run(args.run_dir, _evaluation_overrides(args), registry, args.output,
                       progress=not args.no_progress))
    return 0


def cmd_leaderboard(args, registry) -> int:
    from .leaderboard import DEFAULT_CLAIMS, build_tables, check_claims, load_claims, load_results, publish
    from .leaderboard.claims import DEFAULT_CLAIMS_NAME
    # Everything is read and checked before anything is written: a bad input leaves the output folder as it was.
    claims = None if args.no_claims else load_claims(args.claims or DEFAULT_CLAIMS)
    results, skipped = load_results(args.results, strict=args.strict)
    for line in skipped:
        print(f"cldiff-bench: skipped {line}", file=sys.stderr)
    if not results:
        raise UserError("no valid result files to build a leaderboard from")
    tables = build_tables(results, allow_mixed=args.allow_mixed)
    findings = None if claims is None else check_claims(
        tables, claims, f"`{args.claims}`" if args.claims else DEFAULT_CLAIMS_NAME)
    if args.output.exists() and not args.output.is_dir():
        raise UserError(f"output folder {args.output} exists and is not a folder")
    command = ("cldiff-bench leaderboard " + " ".join(map(str, args.results)) + f" -o {args.output}"
               + (f" --claims {args.claims}" if args.claims else "") + (" --no-claims" if args.no_claims else ""))
    try:
        paths = publish(args.format, tables, args.output, skipped, findings, command, args.produced_by)
    except OSError as exc:
        raise UserError(f"cannot write the leaderboard into {args.output}: {exc.strerror or exc}") from exc
    for path in paths:
        print(path)
    if findings is not None:
        print("cldiff-bench: findings: " + ", ".join(f"{n} {v}" for v, n in findings.counts().items()),
              file=sys.stderr)
    return 0


def cmd_check(args, registry) -> int:
    from .leaderboard import compare, parse_tolerances, read_result, report
    result = read_result(args.result, "result file")
    reference = read_result(args.against, "reference file")
    findings = compare(result, reference, parse_tolerances(args.tolerance), args.all_tasks)
    print(report(findings))
    return 0 if all(f.ok for f in findings) else 1


def cmd_list(args, registry) -> int:
    from tabulate import tabulate

    from .diffusion.unet import UNet, count_parameters, model_config
    from .profiles import PROFILES

    strategies = registry.entries("strategy")
    print("Strategies")
    print(tabulate([[n, e.obj.description, ", ".join(f"{k}={v.default}" for k, v in e.obj.options.items()) or "-",
                     e.source] for n, e in sorted(strategies.items())],
                   headers=["name", "description", "options (default)", "from"]))
    print("\nStreams")
    print(tabulate([[n, e.obj.description, "no" if not e.obj.needs_data else "yes", e.source]
                    for n, e in sorted(registry.entries("stream").items())],
                   headers=["name", "description", "needs data", "from"]))
    print("\nModel presets")
    rows = []
    for n, e in sorted(registry.entries("model preset").items()):
        cfg = model_config(n, e.obj, e.obj.get("in_channels", 1))
        rows.append([n, cfg.in_channels if "in_channels" in e.obj else "any", "/".join(map(str, cfg.channels)),
                     cfg.layers_per_block, ",".join(str(32 >> a) + "px" for a in cfg.attention_levels) + "+mid",
                     f"{count_parameters(UNet(cfg)) / 1e6:.2f}M", e.source])
    print(tabulate(rows, headers=["name", "in ch", "channels", "res/level", "attention", "parameters", "from"]))
    print("\nProfiles")
    print(tabulate([[p.name, p.description] for p in PROFILES.values()], headers=["name", "budget"]))
    if registry.load_errors:
        print("\nPlugins that failed to load")
        for line in registry.load_errors:
            print(f"  {line}")
    return 0


def cmd_train_evaluator(args, registry) -> int:
    from .evaluation import EvalSettings, train_evaluation_classifier
    from .evaluation.classifier import EVALUATION_CLASSIFIER_SEED, REFERENCE_SPLIT_SEED
    from .paths import cache_dir as default_cache_dir
    from .profiles import get_profile
    from .runner import resolve_device
    from .streams.datasets import resolve_data_root

    spec = registry.stream(args.stream)
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    # The classifier every run uses: trained on the reference split, from the evaluation classifier's seed.
    stream = spec.build(resolve_data_root(args.data_root), REFERENCE_SPLIT_SEED, cache)
    settings = EvalSettings(**{"classifier_epochs": spec.evaluator_epochs, **get_profile(args.profile).evaluation})
    _, info = train_evaluation_classifier(stream, settings, cache, resolve_device(args.device),
                                          EVALUATION_CLASSIFIER_SEED)
    print(info)
    return 0


COMMANDS = {"run": cmd_run, "evaluate": cmd_evaluate, "leaderboard": cmd_leaderboard, "check": cmd_check,
            "list": cmd_list, "train-evaluator": cmd_train_evaluator}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from .registry import load_registry
        registry = load_registry(args.plugin)
        for line in registry.load_errors:
            print(f"cldiff-bench: warning: {line}", file=sys.stderr)
        return COMMANDS[args.command](args, registry)
    except UserError as exc:
        if args.debug:
            raise
        print(f"cldiff-bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
