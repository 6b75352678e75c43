"""Does the evaluation classifier read generated images right? Train a U-Net on task 0 of a stream (two classes),
sample it, and count how many samples the classifier puts in those two classes (a ruler: nearly all). With
--score-at, the same count along the training: at how many iterations a model's samples become its classes.

    python benchmarks/ruler_generated_check.py --stream fmnist-5 --data-root DATA [--model small]
        [--iterations 600] [--batch-size 64] [--learning-rate 1e-3] [--ema-decay D] [--samples 200] [--steps 10]
        [--score-at 400,800] [--grid OUT.png]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cldiff_bench.arguments import int_list_type
from cldiff_bench.core import DiffusionCore
from cldiff_bench.diffusion.seeding import generator
from cldiff_bench.diffusion.unet import model_config
from cldiff_bench.evaluation import EvalSettings, train_evaluation_classifier
from cldiff_bench.evaluation.classifier import predict_logits
from cldiff_bench.sample_sheets import save_sample_sheet
from cldiff_bench.paths import cache_dir as default_cache_dir
from cldiff_bench.profiles import evaluation_settings, get_profile
from cldiff_bench.registry import load_registry
from cldiff_bench.streams.base import to_model_range, to_uint8
from cldiff_bench.streams.datasets import resolve_data_root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", default="fmnist-5")
    ap.add_argument("--profile", default="small", help="whose evaluation classifier")
    ap.add_argument("--seed", type=int, default=0, help="class order")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--model", default="small")
    ap.add_argument("--channels", type=lambda text: [int(c) for c in text.split(",")], default=None,
                    help="the preset's channels per level, widened or narrowed (e.g. 32,64,128,128)")
    ap.add_argument("--iterations", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--ema-decay", type=float, default=None, help="sample an EMA of the weights (as the cpu profile)")
    ap.add_argument("--score-at", type=int_list_type("--score-at", minimum=1), default=[],
                    help="also count the samples' classes after these iterations")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--grid", type=Path, default=None, help="also save the samples, captioned, to this PNG")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = load_registry([])
    spec = registry.stream(args.stream)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    stream = spec.build(resolve_data_root(args.data_root), args.seed, cache)
    settings = EvalSettings(**evaluation_settings(get_profile(args.profile, args.stream), spec))
    classifier, info = train_evaluation_classifier(stream, settings, cache, torch.device("cpu"))
    preset = dict(registry.model_preset(args.model))
    if args.channels:
        preset["channels"] = tuple(args.channels)
    config = model_config(args.model, preset, stream.image_shape[0])
    core = DiffusionCore(config, stream.image_shape, torch.device("cpu"), init_seed=args.seed)
    data = stream.tasks[0].train
    optimizer = torch.optim.Adam(core.model.parameters(), lr=args.learning_rate)
    ema = copy.deepcopy(core.model).requires_grad_(False) if args.ema_decay else None

    def share_of_task0_classes():
        model = ema if ema is not None else core.model
        samples = to_uint8(core.generate(core.frozen_copy(model.state_dict(), role="student"), list(range(args.samples)),
                                         args.steps))
        labels = predict_logits(classifier, samples, 250, torch.device("cpu")).argmax(1)
        counts = torch.bincount(labels, minlength=stream.num_classes).tolist()
        return samples, labels, counts, sum(counts[c] for c in stream.tasks[0].classes) / len(labels)

    along = {}
    started = time.perf_counter()
    for it in range(args.iterations):
        idx = torch.randint(0, len(data), (args.batch_size,), generator=generator(args.seed, it, 1))
        x_t, t, noise = core.training_targets(to_model_range(data.images[idx]), generator(args.seed, it, 2))
        loss = F.mse_loss(core.model(x_t, t), noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(core.model.parameters(), 1.0)
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema.parameters(), core.model.parameters()):
                    e.lerp_(p, 1 - args.ema_decay)
        if it + 1 in args.score_at:
            along[it + 1] = round(share_of_task0_classes()[3], 3)
            print(f"{it + 1} iterations: share in task-0 classes {along[it + 1]}", flush=True)
    trained = time.perf_counter() - started
    samples, labels, counts, inside = share_of_task0_classes()
    names = stream.class_names
    report = {"stream": args.stream, "classifier": info["version"], "test_accuracy": info["test_accuracy"],
              "task0_classes": [names[c] for c in stream.tasks[0].classes], "model": args.model,
              "channels": list(config.channels), "iterations": args.iterations, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
              "steps": args.steps, "final_loss": loss.item(), "train_seconds": round(trained, 1),
              "labels": {names[c]: n for c, n in enumerate(counts) if n}, "share_in_task0_classes": inside,
              "ema_decay": args.ema_decay, "share_along_training": along}
    print(json.dumps(report, indent=2))
    if args.grid:
        save_sample_sheet(samples[:64], args.grid, [names[c] for c in labels[:64].tolist()])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
