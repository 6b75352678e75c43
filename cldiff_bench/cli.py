"""Command line: `cldiff-bench run | evaluate | leaderboard | check | list | train-evaluator`."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from . import __version__
from .arguments import int_list_type, retire_output_spellings
from .errors import EXIT_INTERRUPTED, Interrupted, UserError
from .profiles import DEFAULT_PROFILE, PROFILES
from .distill.command import add_distill_parser, cmd_distill
from .sweep import add_sweep_parser, cmd_sweep


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


RULER_HELP = ("score with this evaluation classifier (a file train-evaluator made) instead of the pinned one; results "
              "record its digest and boards keep them apart")


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr and exit status 2, like every other bad input (usage: --help)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_scoring_arguments(parser: argparse.ArgumentParser, num_generated_help: str) -> None:
    """What the commands that score without training share: where data and caches are, and the evaluation."""
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--extractor", default=None, help="FID features (see `cldiff-bench list`)")
    parser.add_argument("--num-generated", type=int, default=None, help=num_generated_help)
    parser.add_argument("--inception-weights", default=None)
    parser.add_argument("--classifier-weights", default=None, metavar="FILE")
    parser.add_argument("--ruler", default=None, metavar="FILE", help=RULER_HELP)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cldiff-bench", description="Continual learning of diffusion models: "
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
    seeds.add_argument("--seeds", type=int_list_type("seeds"), default=None,
                       help="several seeds, e.g. 0,1,2: one result each")
    run.add_argument("--profile", default=DEFAULT_PROFILE,
                     help=f"budget: {', '.join(PROFILES)} (default {DEFAULT_PROFILE})")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    run.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                     help="U-Net precision (default: the profile's, fp32); bf16 autocast is an opt-in speed-up on "
                          "hardware with native bfloat16, recorded in the result")
    run.add_argument("--threads", type=int, default=None, metavar="N",
                     help="threads of this run (default: one per core); give runs side by side a share each")
    run.add_argument("--channels-last", default="inference", choices=["off", "inference", "all"],
                     help="NHWC U-Net weights for sampling only (default), for training too, or never")
    run.add_argument("--compile", action="store_true",
                     help="torch.compile the U-Nets (CUDA graphs on GPUs; compiling takes minutes on a CPU)")
    run.add_argument("--replay-ahead", type=int, default=1, metavar="N",
                     help="draw the teacher's replay samples of N iterations in one batch (same samples, each used "
                          "once; helps a GPU that is underused at the training batch size; default 1)")
    run.add_argument("--out", type=Path, default=Path("runs"), help="output root (default ./runs)")
    retire_output_spellings(run, takes_options=True)
    run.add_argument("--data-root", default=None,
                     help="where data sets live (default: $CLDIFF_BENCH_DATA, else the cache dir's data/)")
    run.add_argument("--cache-dir", default=None, help="caches (default: $CLDIFF_BENCH_CACHE or ~/.cache/cldiff-bench)")
    strat = run.add_argument_group("strategy options (defaults: the study's, per stream)")
    strat.add_argument("-o", "--option", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                       help="set any option the strategy declares (repeatable; `cldiff-bench list --strategy NAME` "
                            "lists them), e.g. -o lambda 0.5")
    strat.add_argument("--lambda", dest="lam", type=_finite, default=None, help="replay loss weight")
    strat.add_argument("--teacher-steps", type=int, default=None, help="DDIM steps of the teacher's replay samples")
    strat.add_argument("--teacher-eta", type=_finite, default=None, help="DDIM eta of the teacher's replay samples")
    strat.add_argument("--teacher-accel", default=None, choices=["none", "pd", "dsd"],
                       help="distil the teacher down to --teacher-steps before replay (gr, gd; default none)")
    budget = run.add_argument_group("budget overrides (defaults: the profile's)")
    budget.add_argument("--model", default=None, help="model preset (see `cldiff-bench list`)")
    budget.add_argument("--init-model", default=None, metavar="PATH",
                        help="start from these weights instead of a random U-Net: a diffusers UNet2DModel folder, "
                             "a file from `import-unet`, or a run's models/taskK.pt (of the --model preset)")
    budget.add_argument("--epochs", type=_finite, default=None, help="epochs per task")
    budget.add_argument("--iterations", type=int, default=None, help="a fixed number of iterations per task")
    budget.add_argument("--batch-size", type=int, default=None)
    budget.add_argument("--learning-rate", type=_finite, default=None, help="Adam's learning rate")
    budget.add_argument("--lr-schedule", choices=["constant", "cosine"], default=None,
                        help="learning rate over each task: constant (the study's) or cosine (warm-up, then decay "
                             "to 0)")
    budget.add_argument("--warmup-iterations", type=int, default=None, help="linear warm-up of the cosine schedule")
    budget.add_argument("--ema-decay", type=_finite, default=None,
                        help="sample (and teach, and keep) an exponential moving average of the weights; 0 turns "
                             "it off")
    budget.add_argument("--image-size", type=int, default=None,
                        help="train and evaluate at this side length (a multiple of 8; the suite's is 32)")
    ev = run.add_argument_group("evaluation")
    ev.add_argument("--no-eval", action="store_true", help="skip the metrics (sample grids are still written)")
    ev.add_argument("--extractor", default=None,
                    help="FID features: classifier, inception, inception-offline, or a plugin's (see `list`)")
    ev.add_argument("--num-generated", type=int, default=None, help="generated samples for FID and KLD")
    ev.add_argument("--inception-weights", default=None, help="local weights file for the inception extractor")
    ev.add_argument("--ruler", default=None, metavar="FILE", help=RULER_HELP)
    ev.add_argument("--classifier-weights", default=None, metavar="FILE",
                    help="torchvision's ImageNet ResNet-18 weights (resnet18-f37072fd.pth) for the paper profile's "
                         "KLD classifier, where they cannot be downloaded")
    rel = run.add_argument_group("checkpoints")
    rel.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    rel.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N iterations in a task")
    rel.add_argument("--force", action="store_true", help="overwrite a run directory of another configuration")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (the log lines stay)")
    run.add_argument("--log", choices=["csv", "tensorboard"], default="csv",
                     help="per-iteration losses: losses.csv in the run directory (always), and with tensorboard "
                          "also TensorBoard events in its tensorboard/ folder")

    ev2 = sub.add_parser("evaluate", help="score a finished run again from its per-task models")
    ev2.add_argument("run_dir", type=Path, help="a run directory (holding result.json and models/)")
    ev2.add_argument("--extractor", default=None,
                     help="FID features: classifier, inception, inception-offline, or a plugin's (see `list`)")
    ev2.add_argument("--num-generated", type=int, default=None)
    ev2.add_argument("--inception-weights", default=None)
    ev2.add_argument("--ruler", default=None, metavar="FILE", help=RULER_HELP)
    ev2.add_argument("--out", type=Path, default=None, help="result file to write (default: beside the run's)")
    retire_output_spellings(ev2)
    ev2.add_argument("--no-progress", action="store_true")

    lb = sub.add_parser("leaderboard", help="build the leaderboard (markdown and plots, csv or latex) from result "
                        "files, with findings: claims checked against its numbers")
    lb.add_argument("results", nargs="+", type=Path, help="result files or folders holding them")
    lb.add_argument("--out", type=Path, default=Path("leaderboard"), help="output folder (default ./leaderboard)")
    retire_output_spellings(lb)
    lb.add_argument("--format", default="markdown", choices=["markdown", "csv", "latex"],
                    help="markdown: README.md + plots/ (default); csv: leaderboard.csv + findings.csv; "
                         "latex: leaderboard.tex (booktabs)")
    claims = lb.add_mutually_exclusive_group()
    claims.add_argument("--claims", type=Path, default=None, metavar="FILE",
                        help="check the claims in this TOML file (default: the study's, shipped with the suite)")
    claims.add_argument("--no-claims", action="store_true", help="no findings")
    lb.add_argument("--strict", action="store_true", help="a malformed result file is an error (default: skipped)")
    lb.add_argument("--produced-by", action="append", default=None, metavar="COMMAND",
                    help="also quote this command as one that produced the result files (repeatable); the lasting "
                         "way is a line in produced-by.txt beside them, which sweeps write and every build reads")
    lb.add_argument("--allow-mixed", action="store_true",
                    help="rank results of different versions or evaluation settings together, flagged")

    ck = sub.add_parser("check", help="compare a result to a reference; exit 1 when a metric got worse")
    ck.add_argument("result", type=Path)
    ck.add_argument("--against", type=Path, required=True, help="the reference result file")
    ck.add_argument("--tolerance", action="append", default=[], metavar="METRIC=ABS[+REL%]",
                    help="one-sided tolerance, e.g. fid=0+25%% (repeatable; defaults per metric)")
    ck.add_argument("--all-tasks", action="store_true", help="check every task, not only the last")

    orc = sub.add_parser("oracle", help="score real held-out images as if generated, after every task: the "
                                        "metrics' floor (the leaderboard's `real data` row)")
    orc.add_argument("--stream", required=True)
    orc.add_argument("--profile", default=DEFAULT_PROFILE,
                     help=f"whose evaluation settings to use (default {DEFAULT_PROFILE})")
    # One seed: after the last task every class is seen and the floor no longer depends on the class order.
    orc.add_argument("--seed", type=int, default=0, help="class order of this seed (default 0)")
    orc.add_argument("--out", type=Path, default=Path("runs"), help="output root (default ./runs)")
    retire_output_spellings(orc)
    _add_scoring_arguments(orc, "held-out images scored per task")

    sc = sub.add_parser("score", help="score one model's samples (FID, KLD, ARD) against the classes seen after a "
                                      "task: a run's models/taskK.pt, an imported model or a diffusers folder")
    sc.add_argument("model", help="model file or diffusers UNet2DModel folder")
    sc.add_argument("--stream", required=True)
    sc.add_argument("--task", type=int, required=True, help="score against the classes seen after this task")
    sc.add_argument("--seed", type=int, default=0, help="whose class order (default 0)")
    sc.add_argument("--profile", default=DEFAULT_PROFILE,
                     help=f"whose evaluation settings to use (default {DEFAULT_PROFILE})")
    sc.add_argument("--model-preset", default=None, help="the preset of a bare state dict (default: the profile's)")
    sc.add_argument("--out", type=Path, default=None, help="also write the scores to this JSON file")
    retire_output_spellings(sc)
    sc.add_argument("--steps", type=int, default=None,
                    help="sampling steps (default: a distilled model's own, else the stream's metric steps), e.g. "
                         "2 for the teacher's")
    sc.add_argument("--sampler", default=None,
                    help="a registered sampler (default: the one the model file names, else ddim; see `list`)")
    _add_scoring_arguments(sc, "samples drawn and scored")

    imp = sub.add_parser("import-unet", help="convert a diffusers UNet2DModel folder (e.g. trained by the study's "
                                             "code) into a model file for `run --init-model` and `score`")
    imp.add_argument("source", help="the diffusers model folder (config.json + weights), or a pipeline folder")
    imp.add_argument("--out", type=Path, required=True, help="model file to write")
    retire_output_spellings(imp)

    ls = sub.add_parser("list", help="strategies, streams, model presets and profiles, and where each comes from")
    shown = ls.add_mutually_exclusive_group()
    shown.add_argument("--strategy", default=None, metavar="NAME", help="show one strategy and every option it takes")
    shown.add_argument("--profile", default=None, metavar="NAME", help="show one profile's budget in full")

    te = sub.add_parser("train-evaluator", help="make an evaluation classifier (a ruler) for a stream's data set, or "
                                                "show the pinned one")
    te.add_argument("--stream", required=True)
    te.add_argument("--profile", default=DEFAULT_PROFILE,
                    help=f"whose classifier settings to use (default {DEFAULT_PROFILE})")
    te.add_argument("--data-root", default=None)
    te.add_argument("--cache-dir", default=None)
    te.add_argument("--device", default="auto")
    te.add_argument("--classifier-weights", default=None, metavar="FILE",
                    help="ImageNet ResNet-18 weights for the paper profile's classifier (else torchvision's)")
    te.add_argument("--retrain", action="store_true",
                    help="train a new one even where one is pinned or cached: another network, which scores runs "
                         "only when named with --ruler")
    te.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_sweep_parser(sub)
    add_distill_parser(sub)
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
                        threads=args.threads,
                        compile=args.compile, replay_ahead=args.replay_ahead, out=args.out,
                        data_root=args.data_root,
                        cache_dir=args.cache_dir,
                        strategy_options=_strategy_options(args),
                        model=args.model, epochs=args.epochs, iterations=args.iterations,
                        batch_size=args.batch_size, learning_rate=args.learning_rate, init_model=args.init_model,
                        lr_schedule=args.lr_schedule, warmup_iterations=args.warmup_iterations,
                        ema_decay=args.ema_decay, image_size=args.image_size,
                        evaluation=evaluation,
                        evaluate=not args.no_eval,
                        checkpoint_every=args.checkpoint_every, resume=args.resume, force=args.force,
                        progress=not args.no_progress, tensorboard=args.log == "tensorboard")
        path = run(cfg, registry)
        print(path)
    return 0


def _strategy_options(args) -> dict:
    """-o KEY VALUE pairs (converted by the strategy, which knows each option's type), and the named aliases."""
    options = {}
    for key, value in args.option:
        key = key.replace("-", "_")
        if key in options:
            raise UserError(f"option {key} is given twice")
        options[key] = value
    for key, value in (("lambda", args.lam), ("teacher_steps", args.teacher_steps), ("teacher_eta", args.teacher_eta),
                       ("teacher_accel", args.teacher_accel)):
        if value is not None:
            if key in options:
                raise UserError(f"option {key} is given twice (-o {key} and its named flag)")
            options[key] = value
    return options


def _evaluation_overrides(args) -> dict:
    if args.num_generated is not None and args.num_generated <= 0:
        raise UserError(f"--num-generated must be positive, got {args.num_generated}")
    return {k: v for k, v in {"extractor": args.extractor, "num_generated": args.num_generated,
                              "inception_weights": args.inception_weights,
                              "classifier_weights": getattr(args, "classifier_weights", None),
                              "ruler_file": getattr(args, "ruler", None)}.items()
            if v is not None}


def cmd_evaluate(args, registry) -> int:
    from .runner import evaluate_run
    if not (args.run_dir / "result.json").is_file():
        raise UserError(f"{args.run_dir} holds no result.json (is it a finished run directory?)")
    print(evaluate_run(args.run_dir, _evaluation_overrides(args), registry, args.out,
                       progress=not args.no_progress))
    return 0


def cmd_leaderboard(args, registry) -> int:
    from .leaderboard import DEFAULT_CLAIMS, build_tables, check_claims, load_claims, load_results, publish
    from .leaderboard.claims import DEFAULT_CLAIMS_NAME
    from .leaderboard.provenance import read_produced_by
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
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"output folder {args.out} exists and is not a folder")
    # Not --out: where a page is written does not change it (built again elsewhere it is byte for byte the same).
    command = ("cldiff-bench leaderboard " + " ".join(map(str, args.results))
               + (f" --claims {args.claims}" if args.claims else "") + (" --no-claims" if args.no_claims else ""))
    produced_by = read_produced_by(args.results) + [p for p in args.produced_by or []]
    try:
        paths = publish(args.format, tables, args.out, skipped, findings, command, produced_by)
    except OSError as exc:
        raise UserError(f"cannot write the leaderboard into {args.out}: {exc.strerror or exc}") from exc
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
    from .profiles import PROFILE_COLUMNS, PROFILES, describe_profile, get_profile, profile_rows

    if args.profile:
        print(describe_profile(get_profile(args.profile)))
        return 0
    strategies = registry.entries("strategy")
    if args.strategy:
        cls = registry.strategy(args.strategy)
        print(f"{cls.name}: {cls.description} (from {strategies[cls.name].source})")
        rows = [[f"-o {k} VALUE", type(o.default).__name__, o.default,
                 ", ".join(f"{s}: {v}" for s, v in (o.per_stream or {}).items()) or "-",
                 "-" if o.minimum is None else o.minimum, o.help] for k, o in sorted(cls.options.items())]
        print(tabulate(rows, headers=["option", "type", "default", "per stream", "minimum", "meaning"])
              if rows else "it takes no options")
        return 0
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
    print("\nFID feature extractors")
    print(tabulate([[n, e.obj.description, e.source] for n, e in sorted(registry.entries("extractor").items())],
                   headers=["name", "description", "from"]))
    print("\nSamplers (score --sampler)")
    print(tabulate([[n, e.obj.description, e.source] for n, e in sorted(registry.entries("sampler").items())],
                   headers=["name", "description", "from"]))
    print("\nDistillation methods (distill --method, -o teacher_accel)")
    print(tabulate([[n, e.obj.description, e.source] for n, e in sorted(registry.entries("distiller").items())],
                   headers=["name", "description", "from"]))
    print("\nProfiles (`cldiff-bench list --profile NAME` for the whole description)")
    print(tabulate(profile_rows(PROFILES.values()), headers=PROFILE_COLUMNS))
    if registry.load_errors:
        print("\nPlugins that failed to load")
        for line in registry.load_errors:
            print(f"  {line}")
    return 0


def cmd_train_evaluator(args, registry) -> int:
    import json

    from .evaluation import EvalSettings, train_evaluation_classifier
    from .evaluation.classifier import classifier_paths
    from .paths import cache_dir as default_cache_dir
    from .profiles import evaluation_settings, get_profile
    from .runner import resolve_device
    from .streams.datasets import resolve_data_root

    spec = registry.stream(args.stream)
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    # Any split gives the same classifier: it trains on the data set's images in a canonical order.
    profile = get_profile(args.profile, args.stream)
    stream = spec.build(resolve_data_root(args.data_root), 0, cache).at_size(profile.image_size)
    overrides = {"classifier_weights": args.classifier_weights} if args.classifier_weights else {}
    settings = EvalSettings(**{**evaluation_settings(profile, spec), **overrides})
    settings.validate()
    _, info = train_evaluation_classifier(stream, settings, cache, resolve_device(args.device),
                                          progress=not args.no_progress, retrain=args.retrain)
    print(json.dumps(info, indent=1))
    if args.retrain:
        print(f"cldiff-bench: a new ruler (weights {info['weights_sha256']}): score runs with it by --ruler "
              f"{classifier_paths(cache, stream.dataset, info['version'])[0]}", file=sys.stderr)
    return 0


def cmd_oracle(args, registry) -> int:
    from .scoring import run_oracle
    if args.seed < 0:
        raise UserError(f"--seed must be non-negative, got {args.seed}")
    print(run_oracle(args.stream, args.profile, registry, args.out, args.seed, args.data_root, args.cache_dir,
                     args.device, _evaluation_overrides(args), progress=not args.no_progress))
    return 0


def cmd_score(args, registry) -> int:
    import json

    from .io import atomic_write_json
    from .scoring import score_model
    overrides = _evaluation_overrides(args)
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps must be >= 1, got {args.steps}")
        overrides["fid_steps"] = args.steps
    scores = score_model(args.model, args.stream, args.task, args.profile, registry, args.seed, args.model_preset,
                         args.data_root, args.cache_dir, args.device, overrides,
                         progress=not args.no_progress, sampler=args.sampler)
    if args.out:
        atomic_write_json(args.out, scores)
    metrics = scores["metrics"]
    print(json.dumps({k: metrics[k] for k in ("fid", "fid_extractor", "kld", "ard", "num_generated")}))
    return 0


def cmd_import_unet(args, registry) -> int:
    from .diffusion.diffusers_import import import_diffusers_unet
    config = import_diffusers_unet(args.source, args.out)
    print(f"{args.out}: U-Net with channels {list(config.channels)}, {config.layers_per_block} ResNet block(s) "
          f"per level, attention at levels {list(config.attention_levels)}")
    return 0


COMMANDS = {"run": cmd_run, "evaluate": cmd_evaluate, "leaderboard": cmd_leaderboard, "check": cmd_check,
            "list": cmd_list, "train-evaluator": cmd_train_evaluator, "oracle": cmd_oracle,
            "score": cmd_score, "import-unet": cmd_import_unet, "sweep": cmd_sweep, "distill": cmd_distill}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad argument (already printed as one line)
        return exc.code if isinstance(exc.code, int) else 2
    except KeyboardInterrupt:
        print("cldiff-bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
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
    except Interrupted as exc:
        print(f"cldiff-bench: interrupted: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("cldiff-bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
