"""Is the evaluation classifier a ruler? Train (or load) it and score real held-out images as if generated.

For each seed's class order and each task, the held-out training images of the seen classes are labelled by the
classifier and compared with the seen test set's class histogram (KLD, ARD), exactly as generated samples are;
a ruler scores them near zero. Prints the classifier's accuracy (overall and per class) and a table per seed.

    python benchmarks/ruler_check.py --stream fmnist-5 --data-root DATA --seeds 0,42 [--epochs N] [--json OUT]

`--information-size N` first shrinks every image it scores to N x N and back (bilinear), as a generator at N x N
would draw them: how the ruler reads a lower resolution than its own.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cldiff_bench.evaluation import EvalSettings, train_evaluation_classifier
from cldiff_bench.evaluation.classifier import holdout_split, predict_logits
from cldiff_bench.evaluation.metrics import class_histogram, kl_divergence, total_variation
from cldiff_bench.paths import cache_dir as default_cache_dir
from cldiff_bench.profiles import evaluation_settings, get_profile
from cldiff_bench.registry import load_registry
from cldiff_bench.streams.datasets import resolve_data_root


def through_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images shrunk to size x size and enlarged back to their own size (bilinear, antialiased down)."""
    x = images.float()
    small = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    back = F.interpolate(small, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
    return back.round().clamp(0, 255).to(torch.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", default="fmnist-5")
    ap.add_argument("--profile", default="small")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--seeds", default="0,42")
    ap.add_argument("--epochs", type=int, default=None, help="override the classifier's epochs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--information-size", type=int, default=None, metavar="N",
                    help="score images shrunk to N x N and enlarged back (bilinear)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = load_registry([])
    spec = registry.stream(args.stream)
    settings = EvalSettings(**evaluation_settings(get_profile(args.profile, args.stream), spec))
    if args.epochs:
        settings.classifier_epochs = args.epochs
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    root = resolve_data_root(args.data_root)
    report = {"stream": args.stream, "profile": args.profile, "settings": settings.to_dict(),
              "information_size": args.information_size, "seeds": {}}
    shrink = (lambda images: through_size(images, args.information_size)) if args.information_size else (lambda x: x)
    start = time.perf_counter()
    for seed in [int(s) for s in args.seeds.split(",")]:
        stream = spec.build(root, seed, cache)
        model, info = train_evaluation_classifier(stream, settings, cache, torch.device("cpu"))
        _, held = holdout_split(stream, settings.classifier_holdout)
        pred = predict_logits(model, shrink(held.images), 500, torch.device("cpu")).argmax(1)
        if args.information_size:  # the test accuracy of the record is at full size: measure it at this one
            test = stream.test_seen(stream.num_tasks - 1)
            test_pred = predict_logits(model, shrink(test.images), 500, torch.device("cpu")).argmax(1)
            info = {**info, "test_accuracy": float((test_pred == test.labels).double().mean()),
                    "test_accuracy_per_class": [float((test_pred[test.labels == c] == c).double().mean())
                                                for c in range(stream.num_classes)]}
        report["classifier"] = info
        rows = []
        for k in range(stream.num_tasks):
            seen = stream.seen_classes(k)
            mask = torch.isin(held.labels, torch.tensor(seen))
            p_gen = class_histogram(pred[mask], stream.num_classes)
            p_true = class_histogram(stream.test_seen(k).labels, stream.num_classes)
            rows.append({"task": k, "classes": [stream.class_names[c] for c in stream.tasks[k].classes],
                         "kld": kl_divergence(p_true, p_gen), "ard": total_variation(p_true, p_gen),
                         "num_images": int(mask.sum())})
        report["seeds"][seed] = rows
    report["seconds"] = round(time.perf_counter() - start, 1)
    info = report["classifier"]
    print(f"classifier {info['version']}: test accuracy {info['test_accuracy']:.4f}, held-out "
          f"{info['holdout_accuracy']}, best epoch {info['best_epoch']}, trained in {info['train_seconds']:.0f} s")
    print("per class: " + ", ".join(f"{n} {a:.3f}" for n, a in zip(stream.class_names,
                                                                   info["test_accuracy_per_class"])))
    for seed, rows in report["seeds"].items():
        print(f"seed {seed}: " + "; ".join(f"task {r['task']} ({'/'.join(r['classes'])}) KLD {r['kld']:.3f} "
                                           f"ARD {r['ard']:.3f}" for r in rows))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
