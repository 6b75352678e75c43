"""Why the `cpu` profile is what it is: for each budget tried, naive and joint on real Fashion-MNIST (seed 0), the
gap between them after the last task, the task-0 model's samples at 2 DDIM steps (the teacher's replay) and at 10
(the metrics'), and the CPU time it all took.

    python benchmarks/calibrate_cpu_profile.py --data-root DATA_ROOT [--candidates cpu,cpu-300,...] [--out DIR]

Each candidate is the `cpu` profile with some budget overrides (see CANDIDATES). The two runs of a candidate go
side by side with one thread each, as the leaderboard sweep runs them. Resumable: finished runs are skipped and
unfinished ones continue from their checkpoints. Writes benchmarks/results/calibration-cpu-profile.{json,md}.
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
STREAM = "fmnist-5"
TEACHER_STEPS, METRIC_STEPS = 2, 10

# name -> (what it changes, `cldiff-bench run` overrides of the cpu profile)
CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "cpu": ("the profile: 16 px, 600 it/task, lr 2e-3 cosine, EMA 0.995", []),
    "cpu-no-ema-constant-lr": ("as cpu, but constant lr 1e-3 and no EMA (the old small's optimiser)",
                               ["--ema-decay", "0", "--lr-schedule", "constant", "--learning-rate", "1e-3"]),
    "cpu-300": ("as cpu, 300 it/task", ["--iterations", "300"]),
    "cpu-1200": ("as cpu, 1,200 it/task", ["--iterations", "1200"]),
    "cpu-32px": ("as cpu, at the suite's 32 x 32", ["--image-size", "32"]),
    "small": ("the old small profile (32 px, 100 it/task, constant lr 1e-3, no EMA)", ["--profile", "small"]),
}


def run_pair(name: str, overrides: list[str], args) -> dict[str, dict]:
    """naive and joint of one candidate, side by side; their results by strategy."""
    root = args.out / name
    procs = {}
    for strategy in ("naive", "joint"):
        log = open(root.parent / f"{name}-{strategy}.log", "ab")
        cmd = [sys.executable, "-m", "cldiff_bench.cli", "run", "--strategy", strategy, "--stream", STREAM,
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
        results[strategy] = json.loads((root / STREAM / profile / strategy / "seed0" / "result.json").read_text())
    return results


def task0_quality(result: dict, run_dir: Path, args) -> dict:
    """The task-0 model's samples at the teacher's and at the metrics' DDIM steps."""
    from cldiff_bench.registry import load_registry
    from cldiff_bench.scoring import score_model

    out = {}
    for steps in (TEACHER_STEPS, METRIC_STEPS):
        began = time.perf_counter()
        scores = score_model(str(run_dir / "models" / "task0.pt"), STREAM, 0, "cpu", load_registry(), 0,
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


def markdown(rows: list[dict]) -> str:
    headers = ["candidate", "changes", "naive / joint wall (min)", "FID naive / joint", "KLD naive / joint",
               "ARD naive / joint", "accuracy naive / joint", f"task 0 at {TEACHER_STEPS} steps: FID, KLD",
               f"task 0 at {METRIC_STEPS} steps: FID, KLD"]
    body = []
    for r in rows:
        q2, q10 = r["task0"][f"{TEACHER_STEPS}_steps"], r["task0"][f"{METRIC_STEPS}_steps"]
        body.append([r["candidate"], r["changes"],
                     f"{r['cpu_minutes']['naive']:.1f} / {r['cpu_minutes']['joint']:.1f}",
                     *[f"{r[m]['naive']:.3g} / {r[m]['joint']:.3g}" for m in ("fid", "kld", "ard", "accuracy")],
                     f"{q2['fid']:.3g}, {q2['kld']:.3g}", f"{q10['fid']:.3g}, {q10['kld']:.3g}"])
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None, help="where FashionMNIST/raw lives (default: the suite's)")
    p.add_argument("--candidates", default="cpu,cpu-no-ema-constant-lr,cpu-300",
                   help=f"comma-separated, of: {', '.join(CANDIDATES)}")
    p.add_argument("--out", type=Path, default=Path("runs/calibration"), help="where the runs go")
    args = p.parse_args(argv)
    names = [n for n in args.candidates.split(",") if n]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        p.error(f"unknown candidate(s) {unknown}; choose from {', '.join(CANDIDATES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    record_path = RESULTS / "calibration-cpu-profile.json"
    rows = {r["candidate"]: r for r in json.loads(record_path.read_text())} if record_path.is_file() else {}
    for name in names:
        description, overrides = CANDIDATES[name]
        began = time.perf_counter()
        results = run_pair(name, overrides, args)
        profile = "small" if "small" in overrides else "cpu"
        quality = task0_quality(results["naive"], args.out / name / STREAM / profile / "naive" / "seed0", args)
        rows[name] = summarise(name, description, results, quality, time.perf_counter() - began)
        ordered = [rows[n] for n in CANDIDATES if n in rows]
        RESULTS.mkdir(exist_ok=True)
        record_path.write_text(json.dumps(ordered, indent=1) + "\n")
        (RESULTS / "calibration-cpu-profile.md").write_text(
            "Calibration of the `cpu` profile: naive and joint on fmnist-5, seed 0, metrics after the last task; "
            "the task-0 model's samples scored at the teacher's and the metrics' DDIM steps. Made by "
            "`python benchmarks/calibrate_cpu_profile.py`.\n\n" + markdown(ordered) + "\n")
        print(markdown([rows[name]]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
