"""The `distill` subcommand's arguments and its call (the work is in runner.py, imported only when it runs)."""
from __future__ import annotations

from pathlib import Path

from ..arguments import int_list_type, retire_output_spellings
from ..commands import CommandSpec
from ..profiles import DEFAULT_PROFILE
from ..run_arguments import add_arguments, evaluation_overrides


def add_distill_arguments(d) -> None:
    d.add_argument("model", help="the model: a run's models/taskK.pt, a model file or a diffusers folder")
    d.add_argument("--method", required=True, help="pd or dsd (or a plugin's; see `cldiff-bench list`)")
    d.add_argument("--stream", required=True, help="the stream the model learnt (image size and channels, scoring)")
    d.add_argument("--task", type=int, required=True, help="score against the classes seen after this task")
    d.add_argument("--out", type=Path, required=True, help="output directory")
    retire_output_spellings(d)
    d.add_argument("--seed", type=int, default=0, help="class order and the chains' noise (default 0)")
    d.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"image size, precision and evaluation settings: the run's profile (default {DEFAULT_PROFILE})")
    d.add_argument("--model-preset", default=None, help="the preset of a bare state dict (default: the profile's)")
    d.add_argument("--target-steps", type=int, default=1, help="sampling steps of the distilled model (default 1)")
    d.add_argument("--from-steps", type=int, default=64,
                   help="the teacher's sampling steps the first round starts from (default 64)")
    d.add_argument("--updates", type=int, default=200, help="updates per round (default 200)")
    d.add_argument("--batch-size", type=int, default=64, help="sampling-path chains per update (default 64)")
    d.add_argument("--learning-rate", type=float, default=1e-4, help="Adam's learning rate (default 1e-4)")
    d.add_argument("--ema-decay", type=float, default=0.995,
                   help="each round hands on an EMA of its weights (default 0.995; 0 hands on the trained ones)")
    d.add_argument("--convert-updates", type=int, default=None, metavar="N",
                   help="a conversion round of its own, N updates at the teacher's steps, turns an epsilon teacher "
                        "into a v model before the halving (default: pd converts within its first halving round, "
                        "dsd in a round of --updates)")
    d.add_argument("--convert-learning-rate", type=float, default=None, metavar="LR",
                   help="the conversion round's learning rate (default: --learning-rate)")
    d.add_argument("--schedule", choices=["halving", "neighbours"], default=None,
                   help="dsd: halve the steps round by round (default), or one round training neighbouring steps of "
                        "the --from-steps grid, sampled with --target-steps (the DSD paper's DSDN)")
    d.add_argument("--lr-schedule", choices=["constant", "cosine"], default=None,
                   help="within each round: constant (default) or a linear warm-up then cosine decay")
    d.add_argument("--warmup-fraction", type=float, default=None, metavar="F",
                   help="cosine: the share of a round's updates that warm up (the DSD paper: 0.05)")
    d.add_argument("--final-learning-rate", type=float, default=None, metavar="LR",
                   help="cosine: the rate it decays to (default 0; the DSD paper: 1e-7)")
    d.add_argument("--weight-decay", type=float, default=None, help="Adam's L2 penalty (default 0; DSD paper: 5e-4)")
    d.add_argument("--anchor-weight", type=float, default=None, metavar="BETA",
                   help="dsd-anchored: the self-distillation term's share beta, the v-loss on the task's images "
                        "taking 1 - beta (default 0.15, the DSD paper's)")
    d.add_argument("--anchor", dest="anchor_source", choices=["data", "samples"], default=None,
                   help="dsd-anchored: the images it learns from: the task's training images (data, default) or "
                        "--anchor-images samples of the input model at --from-steps (samples: what a continual "
                        "learner's teacher accelerator has)")
    d.add_argument("--anchor-images", type=int, default=None, metavar="N",
                   help="--anchor samples: the pool's size (default 1024)")
    d.add_argument("--eval-steps", type=int_list_type("--eval-steps", minimum=1), default=(1, 2, 4, 8),
                   help="score at these steps, distilled and plain DDIM (default 1,2,4,8)")
    d.add_argument("--no-eval", action="store_true", help="distil only, no scores")
    d.add_argument("--checkpoint-every", type=int, default=50, help="checkpoint every N updates (default 50)")
    d.add_argument("--resume", action="store_true", help="continue from the output directory's checkpoint")
    d.add_argument("--force", action="store_true", help="overwrite an output directory of another configuration")
    add_arguments(d, ("threads", "data_root", "cache_dir", "device", "extractor", "num_generated",
                      "inception_weights", "ruler"), {"num_generated": "samples drawn and scored per step count"})
    d.add_argument("--no-progress", action="store_true", help="no progress bars (the log lines stay)")


def distill_command(args, registry) -> int:
    from ..errors import UserError
    from .runner import DistillRequest, distill

    evaluation = evaluation_overrides(args)
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be a whole number >= 1, got {args.threads}")
    request = DistillRequest(
        model=args.model, method=args.method, stream=args.stream, task=args.task, out=args.out, seed=args.seed,
        profile=args.profile, model_preset=args.model_preset, target_steps=args.target_steps,
        from_steps=args.from_steps, updates=args.updates, batch_size=args.batch_size,
        learning_rate=args.learning_rate, ema_decay=args.ema_decay or None, convert_updates=args.convert_updates,
        convert_learning_rate=args.convert_learning_rate, eval_steps=args.eval_steps,
        regime={k: getattr(args, k) for k in ("schedule", "lr_schedule", "warmup_fraction", "final_learning_rate",
                                              "weight_decay", "anchor_weight", "anchor_source", "anchor_images")
                if getattr(args, k) is not None},
        evaluate=not args.no_eval, evaluation=evaluation, data_root=args.data_root, cache_dir=args.cache_dir,
        device=args.device, threads=args.threads, checkpoint_every=args.checkpoint_every, resume=args.resume,
        force=args.force, progress=not args.no_progress)
    print(distill(request, registry))
    return 0


DISTILL = CommandSpec("distill", "distil a saved model into a few-step sampler (progressive distillation or direct "
                      "self-distillation) and score it against plain DDIM", add_distill_arguments, distill_command)
