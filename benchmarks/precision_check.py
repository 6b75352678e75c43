"""Does bfloat16 autocast change the results? gd runs in float32 and in bfloat16, three seeds each, and the final
metrics compared against their seed-to-seed noise.

    python benchmarks/precision_check.py [--stream fmnist-5] [--profile cpu] [--seeds 0,1,2] [--data-root DATA]
                                         [--fp32-results leaderboard/results] [--out DIR]

A metric passes when |mean_bf16 - mean_fp32| <= 2 * sqrt(se_bf16^2 + se_fp32^2) (standard errors, ddof 1).
Exit status 1 when one does not. The default is the published board's budget, where the metrics vary with the
model (at the tiny profile every seed scored the same degenerate KLD, so no difference could show).
`--fp32-results` reuses float32 runs of the same configuration (e.g. the board's own, every profile being float32)
instead of training them again; it is only read, never written. Cells run two at a time with one thread each and resume after an interruption.
bfloat16 needs a CPU with native bfloat16 (or a GPU); elsewhere it is emulated and slow, but the comparison holds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from tabulate import tabulate

from cldiff_bench.leaderboard.aggregate import METRICS, mean_and_standard_error

PRECISIONS = ("fp32", "bf16")
STRATEGY = "gd"


def cell_result(root: Path, args, seed: int) -> Path:
    return root / args.stream / args.profile / STRATEGY / f"seed{seed}" / "result.json"


def run_cells(root: Path, precision: str, seeds: list[int], args) -> list[dict]:
    missing = [s for s in seeds if not cell_result(root, args, s).is_file()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for i in range(0, len(missing), 2):  # two cells side by side, one thread each
        procs = []
        for seed in missing[i:i + 2]:
            cmd = [sys.executable, "-m", "cldiff_bench.cli", "run", "--strategy", STRATEGY, "--stream",
                   args.stream, "--profile", args.profile, "--precision", precision, "--seed", str(seed),
                   "--threads", "1", "--resume", "--checkpoint-every", "100", "--no-progress", "--out", str(root)]
            if args.data_root:
                cmd += ["--data-root", args.data_root]
            procs.append(subprocess.Popen(cmd, env=env))
        if any(p.wait() != 0 for p in procs):
            raise SystemExit(f"a {precision} run failed")
    return [json.loads(cell_result(root, args, s).read_text()) for s in seeds]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stream", default="fmnist-5")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--data-root", default=None)
    p.add_argument("--fp32-results", type=Path, default=None,
                   help="a results root that already holds the float32 runs (e.g. leaderboard/results)")
    p.add_argument("--out", type=Path, default=Path("runs/precision-check"), help="where new runs go")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    roots = {"fp32": args.fp32_results or args.out / "fp32", "bf16": args.out / "bf16"}
    results = {"bf16": run_cells(roots["bf16"], "bf16", seeds, args)}
    if args.fp32_results:  # read only: another process (a sweep) may still be writing what is missing
        missing = [s for s in seeds if not cell_result(roots["fp32"], args, s).is_file()]
        if missing:
            raise SystemExit(f"--fp32-results {roots['fp32']} lacks the float32 runs of seeds {missing}")
        results["fp32"] = [json.loads(cell_result(roots["fp32"], args, s).read_text()) for s in seeds]
    else:
        results["fp32"] = run_cells(roots["fp32"], "fp32", seeds, args)
    for pr, runs in results.items():
        wrong = [r["config"]["seed"] for r in runs if r["config"].get("precision", "fp32") != pr]
        if wrong:
            raise SystemExit(f"the {pr} results of seeds {wrong} under {roots[pr]} are of another precision")
    rows, failed = [], 0
    for metric in METRICS:
        stats = {pr: mean_and_standard_error([r["metrics"][metric][-1] for r in results[pr]]) for pr in PRECISIONS}
        (m32, se32), (m16, se16) = stats["fp32"], stats["bf16"]
        allowed = 2 * math.sqrt((se32 or 0.0) ** 2 + (se16 or 0.0) ** 2)
        ok = abs(m16 - m32) <= allowed
        failed += not ok
        rows.append([metric, f"{m32:.4g} ± {se32 or 0:.2g}", f"{m16:.4g} ± {se16 or 0:.2g}", f"{m16 - m32:+.3g}",
                     f"{allowed:.3g}", "within noise" if ok else "DIFFERENT"])
    wall = {pr: sum(r["wall_seconds"] for r in results[pr]) / len(seeds) / 60 for pr in PRECISIONS}
    print(tabulate(rows, headers=["metric (last task)", "fp32", "bf16", "difference", "2 x combined SE", ""]))
    print(f"{len(seeds)} seeds each; {STRATEGY} on {args.stream} at the {args.profile} profile; mean wall time per "
          f"run (one thread): fp32 {wall['fp32']:.1f} min, bf16 {wall['bf16']:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
