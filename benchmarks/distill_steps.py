"""FID against sampling steps for plain DDIM, progressive distillation (pd) and direct self-distillation (dsd), on
the task-0 model of fmnist-5 at the leaderboard's profile, several seeds.

    python benchmarks/distill_steps.py [--data-root DATA] [--profile cpu] [--seeds 0,1,2] [--from-steps 16]
                                       [--target-steps 1] [--updates 200] [--learning-rate 1e-3] [--methods pd,dsd]
                                       [--convert-updates N] [--convert-learning-rate LR]
                                       [--out runs/distill-steps] [--record benchmarks/results]
    python benchmarks/distill_steps.py --arms all [--data-root DATA] [--seeds 0,1,2]   # the DSD decision table
                                       [--measurement leaderboard/results/measurements]

For each seed: the task-0 model of a naive run (task 0 is the same for every strategy: nothing to replay yet),
stopped once that model is written; then `cldiff-bench distill` with each method from --from-steps down to
--target-steps (default 1; `--from-steps 4 --target-steps 2` is the teacher accelerator's default shape), which
scores each round's model at its own steps among 1, 2, 4 and 8 beside the input model with plain DDIM at those steps
(the same sample seeds). The learning rate defaults to 1e-3, not distill's 1e-4 (Salimans & Ho's, for rounds of
tens of thousands of updates): at 200 updates per round 1e-4 leaves the first round's student, which also turns the
epsilon teacher into a v model, far from its teacher (seed 0: FID 81 at 8 steps against DDIM's 18). Everything
resumes: finished distillations are skipped, a killed one continues. The record is a table (markdown), the
numbers (JSON) and a plot of FID against steps (PNG); with --measurement, the decision's per-seed scores also go
into a board's results folder as the measurement `dsd-decision`, which its Findings' DSD claims compare.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tabulate import tabulate

from cldiff_bench.io import atomic_write_json
from cldiff_bench.leaderboard.aggregate import mean_and_standard_error
from cldiff_bench.leaderboard.measurements import measurement_document

METHODS = ("pd", "dsd")
STREAM = "fmnist-5"
STEPS = ("1", "2", "4", "8")
# The DSD decision experiment (--arms): each arm distils the same task-0 model from 4 steps to 2 at equal network
# evaluations: pd's 600 updates at 3 evaluations per image, each dsd arm's two rounds (the epsilon model's
# conversion, then its own round) at 450 updates and 2 evaluations: 115,200 per image of the batch, each arm.
PAPER_REGIME = ["--learning-rate", "1e-6", "--lr-schedule", "cosine", "--warmup-fraction", "0.05",
                "--final-learning-rate", "1e-7", "--weight-decay", "5e-4"]
ARMS: dict[str, tuple[str, list[str]]] = {
    "pd": ("progressive distillation, the reference", ["--method", "pd", "--updates", "600"]),
    "dsd": ("today's dsd: halving 4 -> 2 at a constant 1e-3", ["--method", "dsd", "--updates", "450"]),
    "dsd-paper": ("the paper's regime: the 64-step grid's neighbours (DSDN), sampled at 2, learning rate 1e-6 to "
                  "1e-7 cosine after a 5% warm-up, weight decay 5e-4 (the conversion round at 1e-3)",
                  ["--method", "dsd", "--schedule", "neighbours", "--from-steps", "64", "--updates", "450",
                   *PAPER_REGIME, "--convert-learning-rate", "1e-3"]),
    "dsd-anchored-0.15": ("anchored to task 0's images, beta 0.15 (the paper's Eq. 1)",
                          ["--method", "dsd-anchored", "--anchor-weight", "0.15", "--updates", "450"]),
    "dsd-anchored-0.5": ("anchored to task 0's images, beta 0.5",
                         ["--method", "dsd-anchored", "--anchor-weight", "0.5", "--updates", "450"]),
    # What a continual run's accelerator can do (teacher_accel dsd-anchored): no training image, the anchor is a
    # pool of the model's own 4-step DDIM samples (1,024 x 4 more evaluations, 3.6% of the arm's).
    "dsd-anchored-0.5-samples": ("anchored to 1,024 of the model's own 4-step samples (no training image: what a "
                                 "continual run's teacher accelerator has), beta 0.5",
                                 ["--method", "dsd-anchored", "--anchor-weight", "0.5", "--updates", "450",
                                  "--anchor", "samples", "--anchor-images", "1024"]),
    "dsd-anchored-0.15-samples": ("the same anchor of the model's own samples, beta 0.15",
                                  ["--method", "dsd-anchored", "--anchor-weight", "0.15", "--updates", "450",
                                   "--anchor", "samples", "--anchor-images", "1024"]),
}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "cldiff_bench.cli", *args]


def task0_model(out: Path, seed: int, args) -> Path:
    """A naive run's models/task0.pt, the run stopped (checkpointed, or between tasks ended) once the file is there."""
    root = out / "runs"
    model = root / STREAM / args.profile / "naive" / f"seed{seed}" / "models" / "task0.pt"
    if model.is_file():
        return model
    cmd = cli("run", "--strategy", "naive", "--stream", STREAM, "--profile", args.profile, "--seed", str(seed),
              "--no-eval", "--threads", str(args.threads), "--no-progress", "--resume", "--out", str(root),
              *(["--data-root", args.data_root] if args.data_root else []))
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    while not model.is_file():
        if proc.poll() is not None:
            raise SystemExit(f"the naive run of seed {seed} ended (status {proc.returncode}) without {model}")
        time.sleep(2)
    # SIGTERM, not SIGINT: a script started in the background (`&`) hands its children SIGINT ignored, and the run
    # only catches signals while it trains (between tasks SIGTERM's default ends it: task0.pt is already written).
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    return model


def conversion_args(args) -> list[str]:
    """distill's options for a conversion round of its own, when asked for."""
    out = []
    if args.convert_updates:
        out += ["--convert-updates", str(args.convert_updates)]
    if args.convert_learning_rate:
        out += ["--convert-learning-rate", str(args.convert_learning_rate)]
    return out


def shape(args) -> str:
    """A name part for steps other than the first table's 16 -> 1, so that each shape keeps its own files."""
    return "" if (args.from_steps, args.target_steps) == (16, 1) else f"-{args.from_steps}to{args.target_steps}"


def distilled(out: Path, model: Path, method: str, seed: int, args) -> dict:
    # Each setting of the conversion round distils into a directory of its own, so the settings' results stay side
    # by side.
    suffix = shape(args) + (f"-convert-updates{args.convert_updates}" if args.convert_updates else "") + \
        (f"-convert-learning-rate{args.convert_learning_rate}" if args.convert_learning_rate else "")
    target = out / f"{method}{suffix}" / f"seed{seed}"
    result = target / "distill.json"
    if not result.is_file():
        cmd = cli("distill", str(model), "--method", method, "--stream", STREAM, "--task", "0", "--seed", str(seed),
                  "--profile", args.profile, "--from-steps", str(args.from_steps),
                  "--target-steps", str(args.target_steps),
                  "--updates", str(args.updates), "--learning-rate", str(args.learning_rate),
                  *conversion_args(args), "--threads", str(args.threads), "--no-progress", "--out", str(target),
                  *(["--resume"] if (target / "checkpoint.pt").is_file() else []),
                  *(["--data-root", args.data_root] if args.data_root else []))
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    return json.loads(result.read_text())


def arm(out: Path, model: Path, name: str, seed: int, args) -> dict:
    """One arm of the decision experiment: its distillation from 4 steps to 2, and its 2-step model also scored at
    4 steps (drift: what the model still does at its teacher's steps)."""
    target = out / "arms" / name / f"seed{seed}"
    result = target / "distill.json"
    if not result.is_file():
        cmd = cli("distill", str(model), "--stream", STREAM, "--task", "0", "--seed", str(seed), "--profile",
                  args.profile, "--from-steps", "4", "--target-steps", "2", "--learning-rate", "1e-3",
                  *ARMS[name][1], "--threads", str(args.threads), "--no-progress", "--out", str(target),
                  *(["--resume"] if (target / "checkpoint.pt").is_file() else []),
                  *(["--data-root", args.data_root] if args.data_root else []))
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    doc = json.loads(result.read_text())
    at4 = target / "model-at-4-steps.json"
    if not at4.is_file():
        subprocess.run(cli("score", str(target / "model.pt"), "--stream", STREAM, "--task", "0", "--seed", str(seed),
                           "--profile", args.profile, "--steps", "4", "--out", str(at4),
                           *(["--data-root", args.data_root] if args.data_root else [])),
                       check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    doc["scores"]["4"]["distilled"] = json.loads(at4.read_text())["metrics"]
    return doc


def summary(docs: dict[str, list[dict]]) -> dict:
    """{sampler: {steps: {metric: (mean, se)}}}, DDIM's from the first method's input-model scores (every
    distillation scores its input model with the same seeds)."""
    rows: dict[str, dict[str, dict]] = {}
    methods = list(docs)
    samples = {"ddim": [d["scores"] for d in docs[methods[0]]]}
    samples.update({m: [d["scores"] for d in docs[m]] for m in methods})
    for name, scores in samples.items():
        key = "ddim" if name == "ddim" else "distilled"
        rows[name] = {}
        for steps in STEPS:
            values = [s[steps][key] for s in scores if s[steps][key] is not None]
            rows[name][steps] = {metric: mean_and_standard_error([v[metric] for v in values])
                                 for metric in ("fid", "kld")} if values else None
    return rows


def cost(docs: dict[str, list[dict]]) -> dict:
    return {m: {"updates": docs[m][0]["cost"]["updates"],
                "network_evaluations": docs[m][0]["cost"]["network_evaluations"],
                "seconds": [d["cost"]["seconds"].get("teacher_distillation") for d in docs[m]]} for m in docs}


def decision_measurement(docs: dict[str, list[dict]], seeds: list[int], args) -> dict:
    """The decision's scores per seed as a board measurement: `ddim@N` (the input model with plain DDIM) and
    `<arm>@N` (the arm's 2-step model, sampled with N steps), FID and KLD at 2 and 4 steps."""
    first = next(iter(docs.values()))
    samples = {f"ddim@{n}": {m: [d["scores"][n]["ddim"][m] for d in first] for m in ("fid", "kld")}
               for n in ("2", "4")}
    for name, runs in docs.items():
        for n in ("2", "4"):
            samples[f"{name}@{n}"] = {m: [d["scores"][n]["distilled"][m] for d in runs] for m in ("fid", "kld")}
    title = ("FID and KLD of fmnist-5's task-0 model (the classes of task 0) distilled from 4 DDIM steps to 2 by "
             "each arm at equal network evaluations, and of the same model with plain DDIM (`ddim`); `@2` the "
             "2-step model, `@4` the same model sampled with 4 steps. Arms: " +
             "; ".join(f"`{a}`: {ARMS[a][0]}" for a in docs) + ".")
    command = ("python benchmarks/distill_steps.py --arms all --data-root DATA --measurement "
               "leaderboard/results/measurements")
    return measurement_document("dsd-decision", STREAM, args.profile, title, command, seeds, samples)


def fmt(stat) -> str:
    if stat is None:
        return "-"
    mean, se = stat
    return f"{mean:.3g}" if se is None else f"{mean:.3g} ± {se:.2g}"


def table(rows: dict, costs: dict, args, seeds: list[int]) -> str:
    settings = ("each arm's settings above, learning rate 1e-3 unless they say otherwise" if args.arms else
                f"{args.updates} updates of 64 chains per round, one round per halving, learning rate "
                f"{args.learning_rate:g}"
                + (f"; first a conversion round of its own, {args.convert_updates} updates at learning rate "
                   f"{args.convert_learning_rate or args.learning_rate:g}" if args.convert_updates else ""))
    head = (f"FID and KLD of fmnist-5's task-0 model (classes of task 0) against sampling steps: plain DDIM, and "
            f"the model distilled by {', '.join(costs)} from {args.from_steps} steps down to {args.target_steps} "
            f"({settings}), seeds "
            + f"{','.join(map(str, seeds))}, profile `{args.profile}`; mean ± s.e. Made by "
            + "`python benchmarks/distill_steps.py`.\n\n")
    lines = [[name] + [f"{fmt(r['fid'])} / {fmt(r['kld'])}" if r else "-" for r in (rows[name][s] for s in STEPS)]
             for name in rows]
    body = tabulate(lines, headers=["sampler", *(f"{s} step{'s' if s != '1' else ''}: FID / KLD" for s in STEPS)],
                    tablefmt="github")
    cost_lines = [[m, c["updates"], c["network_evaluations"],
                   f"{sum(c['seconds']) / len(c['seconds']):.0f}" if all(c["seconds"]) else "-"]
                  for m, c in costs.items()]
    cost_table = tabulate(cost_lines, headers=["method", "updates", "network evaluations", "seconds (mean)"],
                          tablefmt="github")
    seconds = ("seconds on one thread, measured while other distillations shared the 2 cores: indicative only"
               if args.arms else "seconds on one thread")
    return head + body + f"\n\nCost of each distillation (one seed's; {seconds}):\n\n" + cost_table + "\n"


def plot(rows: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in rows:
        points = [(int(s), rows[name][s]["fid"]) for s in STEPS if rows[name][s]]
        ax.errorbar([p[0] for p in points], [p[1][0] for p in points], yerr=[p[1][1] or 0 for p in points],
                    marker="o", capsize=3, label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("FID (task 0)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--from-steps", type=int, default=16)
    p.add_argument("--target-steps", type=int, default=1)
    p.add_argument("--updates", type=int, default=200)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated distillation methods")
    p.add_argument("--arms", default=None,
                   help=f"the DSD decision experiment instead (4 -> 2 at equal network evaluations): comma-separated, "
                        f"of {', '.join(ARMS)}, or all")
    p.add_argument("--convert-updates", type=int, default=None,
                   help="a conversion round of its own, N updates (see `cldiff-bench distill --help`)")
    p.add_argument("--convert-learning-rate", type=float, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/distill-steps"))
    p.add_argument("--record", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--measurement", type=Path, default=None, metavar="DIR",
                   help="--arms: also write the decision as the board measurement dsd-decision into DIR (a results "
                        "folder's measurements/)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.arms:
        methods = list(ARMS) if args.arms == "all" else [a for a in args.arms.split(",") if a]
        unknown = [a for a in methods if a not in ARMS]
        if unknown:
            p.error(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
        args.from_steps, args.target_steps = 4, 2
    else:
        methods = [m for m in args.methods.split(",") if m]
    docs: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in seeds:
        model = task0_model(args.out, seed, args)
        for method in methods:
            docs[method].append(arm(args.out, model, method, seed, args) if args.arms
                                else distilled(args.out, model, method, seed, args))
    rows, costs = summary(docs), cost(docs)
    stem = (f"distill-steps-{STREAM}-{args.profile}" + ("-dsd-decision" if args.arms else shape(args))
            + (f"-convert{args.convert_updates}" if args.convert_updates else ""))
    args.record.mkdir(parents=True, exist_ok=True)
    text = table(rows, costs, args, seeds)
    if args.arms:
        text = ("The DSD decision experiment: every arm distils the same task-0 model from 4 DDIM steps to 2 at equal "
                "network evaluations; each distilled row's 2-step cell is its 2-step model, its 4-step cell the same "
                "model sampled with 4 steps (drift). Arms:\n\n"
                + "\n".join(f"- `{a}`: {ARMS[a][0]} (`{' '.join(ARMS[a][1])}`)" for a in methods)
                + "\n\nMade by `python benchmarks/distill_steps.py --arms all --data-root DATA --measurement "
                "leaderboard/results/measurements`.\n\n" + text)
    (args.record / f"{stem}.md").write_text(text)
    (args.record / f"{stem}.json").write_text(json.dumps(
        {"seeds": seeds, "from_steps": args.from_steps, "target_steps": args.target_steps, "updates": args.updates,
         "learning_rate": args.learning_rate,
         "convert_updates": args.convert_updates, "convert_learning_rate": args.convert_learning_rate,
         "profile": args.profile,
         "summary": rows, "cost": costs,
         "runs": {m: [{"seed": s, "scores": d["scores"], "cost": d["cost"]} for s, d in zip(seeds, docs[m])]
                  for m in methods}}, indent=2) + "\n")
    plot(rows, args.record / f"{stem}.png")
    if args.arms and args.measurement:
        args.measurement.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.measurement / f"dsd-decision-{STREAM}-{args.profile}.json",
                          decision_measurement(docs, seeds, args))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
