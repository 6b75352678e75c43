"""The commands that score without training: `oracle` (real images as if generated), `score` (one model's
samples), `train-evaluator` (a ruler), and `import-unet` (a diffusers model as a model file)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..arguments import retire_output_spellings
from ..errors import UserError
from ..profiles import DEFAULT_PROFILE
from ..run_arguments import SCORING, add_arguments, evaluation_overrides
from . import CommandSpec

PLACES = ("data_root", "cache_dir", "device")


def _add_profile(parser, whose: str) -> None:
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help=f"whose {whose} to use (default {DEFAULT_PROFILE})")


def _add_scoring_arguments(parser, num_generated_help: str) -> None:
    add_arguments(parser, PLACES + SCORING, {"num_generated": num_generated_help})
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_oracle_arguments(parser) -> None:
    parser.add_argument("--stream", required=True)
    _add_profile(parser, "evaluation settings")
    # One seed: after the last task every class is seen and the floor no longer depends on the class order.
    parser.add_argument("--seed", type=int, default=0, help="class order of this seed (default 0)")
    parser.add_argument("--out", type=Path, default=Path("runs"), help="output root (default ./runs)")
    retire_output_spellings(parser)
    _add_scoring_arguments(parser, "held-out images scored per task")


def oracle_command(args, registry) -> int:
    from ..scoring import run_oracle
    if args.seed < 0:
        raise UserError(f"--seed must be non-negative, got {args.seed}")
    print(run_oracle(args.stream, args.profile, registry, args.out, args.seed, args.data_root, args.cache_dir,
                     args.device, evaluation_overrides(args), progress=not args.no_progress))
    return 0


def add_score_arguments(parser) -> None:
    parser.add_argument("model", help="model file or diffusers UNet2DModel folder")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--task", type=int, required=True, help="score against the classes seen after this task")
    parser.add_argument("--seed", type=int, default=0, help="whose class order (default 0)")
    _add_profile(parser, "evaluation settings")
    parser.add_argument("--model-preset", default=None, help="the preset of a bare state dict (default: the profile's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the scores to this JSON file")
    retire_output_spellings(parser)
    parser.add_argument("--steps", type=int, default=None,
                        help="sampling steps (default: a distilled model's own, else the stream's metric steps), "
                             "e.g. 2 for the teacher's")
    parser.add_argument("--sampler", default=None,
                        help="a registered sampler (default: the one the model file names, else ddim; see `list`)")
    _add_scoring_arguments(parser, "samples drawn and scored")


def score_command(args, registry) -> int:
    from ..io import atomic_write_json
    from ..scoring import score_model
    overrides = evaluation_overrides(args)
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


def add_train_evaluator_arguments(parser) -> None:
    parser.add_argument("--stream", required=True)
    _add_profile(parser, "classifier settings")
    add_arguments(parser, PLACES + ("classifier_weights",), {
        "classifier_weights": "ImageNet ResNet-18 weights for the paper profile's classifier (else torchvision's)"})
    parser.add_argument("--retrain", action="store_true",
                        help="train a new one even where one is pinned or cached: another network, which scores "
                             "runs only when named with --ruler")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def train_evaluator_command(args, registry) -> int:
    from ..evaluation import EvalSettings, train_evaluation_classifier
    from ..evaluation.classifier import classifier_paths
    from ..paths import cache_dir as default_cache_dir
    from ..profiles import evaluation_settings, get_profile
    from ..settings import resolve_device
    from ..streams.datasets import resolve_data_root

    spec = registry.stream(args.stream)
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    # Any split gives the same classifier: it trains on the data set's images in a canonical order.
    profile = get_profile(args.profile, args.stream)
    stream = spec.build(resolve_data_root(args.data_root), 0, cache).at_size(profile.image_size)
    settings = EvalSettings(**{**evaluation_settings(profile, spec), **evaluation_overrides(args)})
    settings.validate()
    _, info = train_evaluation_classifier(stream, settings, cache, resolve_device(args.device),
                                          progress=not args.no_progress, retrain=args.retrain)
    print(json.dumps(info, indent=1))
    if args.retrain:
        print(f"cldiff-bench: a new ruler (weights {info['weights_sha256']}): score runs with it by --ruler "
              f"{classifier_paths(cache, stream.dataset, info['version'])[0]}", file=sys.stderr)
    return 0


def add_import_unet_arguments(parser) -> None:
    parser.add_argument("source", help="the diffusers model folder (config.json + weights), or a pipeline folder")
    parser.add_argument("--out", type=Path, required=True, help="model file to write")
    retire_output_spellings(parser)


def import_unet_command(args, registry) -> int:
    from ..diffusion.diffusers_import import import_diffusers_unet
    config = import_diffusers_unet(args.source, args.out)
    print(f"{args.out}: U-Net with channels {list(config.channels)}, {config.layers_per_block} ResNet block(s) "
          f"per level, attention at levels {list(config.attention_levels)}")
    return 0


ORACLE = CommandSpec("oracle", "score real held-out images as if generated, after every task: the metrics' floor "
                     "(the leaderboard's `real data` row)", add_oracle_arguments, oracle_command)
SCORE = CommandSpec("score", "score one model's samples (FID, KLD, ARD) against the classes seen after a task: a "
                    "run's models/taskK.pt, an imported model or a diffusers folder", add_score_arguments, score_command)
TRAIN_EVALUATOR = CommandSpec("train-evaluator", "make an evaluation classifier (a ruler) for a stream's data set, or "
                              "show the pinned one", add_train_evaluator_arguments, train_evaluator_command)
IMPORT_UNET = CommandSpec("import-unet", "convert a diffusers UNet2DModel folder (e.g. trained by the study's code) "
                          "into a model file for `run --init-model` and `score`", add_import_unet_arguments,
                          import_unet_command)
