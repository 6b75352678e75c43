"""Why the `cpu` profile is what it is on a stream: for each budget tried, naive and joint on the real data set
(seed 0), the gap between them after the last task, the task-0 model's samples at the teacher's DDIM steps (2 on
Fashion-MNIST, 10 on CIFAR-10) and at the metrics' (10, 20), and the CPU time it all took.

    python benchmarks/calibrate_cpu_profile.py --data-root DATA_ROOT [--stream fmnist-5|cifar10-5]
                                               [--candidates cpu,cpu-300,...] [--out DIR]

Each candidate is the `cpu` profile (as it runs on the stream) with some budget overrides (see CANDIDATES). The
two runs of a candidate go side by side with one thread each, as the leaderboard sweep runs them. Resumable:
finished runs are skipped and unfinished ones continue from their checkpoints. Writes
benchmarks/results/calibration-cpu-profile.{json,md} (fmnist-5) or calibration-cpu-profile-STREAM.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tabulate import tabulate

RESULTS = Path(__file__).resolve().parent / "results"
# stream -> (teacher's DDIM steps, metrics' DDIM steps): the study's
SAMPLING_STEPS = {"fmnist-5": (2, 10), "cifar10-5": (10, 20)}

# stream -> candidate name -> (what it changes, `cldiff-bench run` overrides of the cpu profile)
FMNIST_CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "cpu": ("the profile: 16 px, 600 it/task, lr 2e-3 cosine, EMA 0.995", []),
    "cpu-no-ema-constant-lr": ("as cpu, but constant lr 1e-3 and no EMA (the old small's optimiser)",
                               ["--ema-decay", "0", "--lr-schedule", "constant", "--learning-rate", "1e-3"]),
    "cpu-300": ("as cpu, 300 it/task", ["--iterations", "300"]),
    "cpu-1200": ("as cpu, 1,200 it/task", ["--iterations", "1200"]),
    "cpu-32px": ("as cpu, at the suite's 32 x 32", ["--image-size", "32"]),
    "small": ("the old small profile (32 px, 100 it/task, constant lr 1e-3, no EMA)", ["--profile", "small"]),
}
CIFAR10_CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "cpu": ("the profile: 32 px, small U-Net on 2 x 2 patches, 400 it/task, lr 2e-3 cosine, EMA 0.995, solver "
            "4 epochs of 1,500 images per task, its replay drawn once", []),
    "cpu-200": ("as cpu, 200 it/task", ["--iterations", "200"]),
    "cpu-800": ("as cpu, 800 it/task", ["--iterations", "800"]),
}
CANDIDATES = {"fmnist-5": FMNIST_CANDIDATES, "cifar10-5": CIFAR10_CANDIDATES}


def run_pair(name: str, overrides: list[str], args) -> dict[str, dict]:
    """naive and joint of one candidate, side by side; their results by strategy."""
    root = args.out / args.stream / name
    procs = {}
    for strategy in ("naive", "joint"):
        root.mkdir(parents=True, exist_ok=True)
        log = open(root.parent / f"{name}-{strategy}.log", "ab")
        cmd = [sys.executable, "-m", "cldiff_bench.cli", "run", "--strategy", strategy, "--stream", args.stream,
               "--profile", "cpu", "--seed", "0", "--threads", "1", "--out", str(root), "--resume",
               "--checkpoint-every", "200", "--no-progress", *overrides]
        if args.data_root:
            cmd += ["--data-root", args.data_root]
        procs[strategy] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
    results = {}
    for strategy, (proc, log) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"{name}: {strategy} failed, see {log.name}")
        log.close()
        profile = "small" if "small" in overrides else "cpu"
        results[strategy] = json.loads((root / args.stream / profile / strategy / "seed0" / "result.json").read_text())
    return results


def task0_quality(result: dict, run_dir: Path, args) -> dict:
    """The task-0 model's samples at the teacher's and at the metrics' DDIM steps."""
    from cldiff_bench.registry import load_registry
    from cldiff_bench.scoring import score_model

    out = {}
    for steps in SAMPLING_STEPS[args.stream]:
        began = time.perf_counter()
        scores = score_model(str(run_dir / "models" / "task0.pt"), args.stream, 0, "cpu", load_registry(), 0,
                             data_root=args.data_root, evaluation={"fid_steps": steps}, progress=False,
                             image_size=result["config"]["budget"].get("image_size") or 32)
        m = scores["metrics"]
        out[f"{steps}_steps"] = {"fid": m["fid"], "kld": m["kld"], "ard": m["ard"],
                                 "seconds": time.perf_counter() - began}
    return out


def final(result: dict, metric: str) -> float:
    return result["tasks"][-1]["metrics"][metric]


def summarise(name: str, description: str, results: dict[str, dict], quality: dict, pair_seconds: float) -> dict:
    naive, joint = results["naive"], results["joint"]
    row = {"candidate": name, "changes": description, "pair_wall_minutes": pair_seconds / 60,
           "cpu_minutes": {s: r["wall_seconds"] / 60 for s, r in results.items()}, "task0": quality}
    for metric in ("fid", "kld", "ard", "accuracy"):
        row[metric] = {"naive": final(naive, metric), "joint": final(joint, metric)}
    return row


def markdown(rows: list[dict], stream: str) -> str:
    teacher_steps, metric_steps = SAMPLING_STEPS[stream]
    headers = ["candidate", "changes", "naive / joint wall (min)", "FID naive / joint", "KLD naive / joint",
               "ARD naive / joint", "accuracy naive / joint", f"task 0 at {teacher_steps} steps: FID, KLD",
               f"task 0 at {metric_steps} steps: FID, KLD"]
    body = []
    for r in rows:
        q2, q10 = r["task0"][f"{teacher_steps}_steps"], r["task0"][f"{metric_steps}_steps"]
        body.append([r["candidate"], r["changes"],
                     f"{r['cpu_minutes']['naive']:.1f} / {r['cpu_minutes']['joint']:.1f}",
                     *[f"{r[m]['naive']:.3g} / {r[m]['joint']:.3g}" for m in ("fid", "kld", "ard", "accuracy")],
                     f"{q2['fid']:.3g}, {q2['kld']:.3g}", f"{q10['fid']:.3g}, {q10['kld']:.3g}"])
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None, help="where the data set lives (default: the suite's)")
    p.add_argument("--stream", default="fmnist-5", choices=list(CANDIDATES))
    p.add_argument("--candidates", default="cpu",
                   help="comma-separated; fmnist-5: " + ", ".join(FMNIST_CANDIDATES) + "; cifar10-5: "
                   + ", ".join(CIFAR10_CANDIDATES))
    p.add_argument("--out", type=Path, default=Path("runs/calibration"), help="where the runs go")
    args = p.parse_args(argv)
    candidates = CANDIDATES[args.stream]
    names = [n for n in args.candidates.split(",") if n]
    unknown = [n for n in names if n not in candidates]
    if unknown:
        p.error(f"unknown candidate(s) {unknown} for {args.stream}; choose from {', '.join(candidates)}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "calibration-cpu-profile" + ("" if args.stream == "fmnist-5" else f"-{args.stream}")
    record_path = RESULTS / f"{stem}.json"
    rows = {r["candidate"]: r for r in json.loads(record_path.read_text())} if record_path.is_file() else {}
    for name in names:
        description, overrides = candidates[name]
        began = time.perf_counter()
        results = run_pair(name, overrides, args)
        profile = "small" if "small" in overrides else "cpu"
        run_dir = args.out / args.stream / name / args.stream / profile / "naive" / "seed0"
        quality = task0_quality(results["naive"], run_dir, args)
        rows[name] = summarise(name, description, results, quality, time.perf_counter() - began)
        ordered = [rows[n] for n in candidates if n in rows]
        RESULTS.mkdir(exist_ok=True)
        record_path.write_text(json.dumps(ordered, indent=1) + "\n")
        (RESULTS / f"{stem}.md").write_text(
            f"Calibration of the `cpu` profile on {args.stream}: naive and joint, seed 0, metrics after the last "
            "task; the task-0 model's samples scored at the teacher's and the metrics' DDIM steps. Made by "
            f"`python benchmarks/calibrate_cpu_profile.py --stream {args.stream}`.\n\n" + markdown(ordered, args.stream)
            + "\n")
        print(markdown([rows[name]], args.stream), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
