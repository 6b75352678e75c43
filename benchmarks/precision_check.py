"""Does bfloat16 autocast change the results? Tiny gd runs on the offline digits stream in float32 and in bfloat16,
three seeds each, and the final metrics compared against their seed-to-seed noise.

    python benchmarks/precision_check.py [--seeds 0,1,2] [--out DIR]

A metric passes when |mean_bf16 - mean_fp32| <= 2 * sqrt(se_bf16^2 + se_fp32^2) (standard errors, ddof 1).
Exit status 1 when one does not. bfloat16 needs a CPU with native bfloat16 (or a GPU); elsewhere it is emulated
and slow, but the comparison still holds.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

from cldiff_bench.leaderboard.aggregate import METRICS, mean_and_standard_error

PRECISIONS = ("fp32", "bf16")


def run_cells(out: Path, precision: str, seeds: str) -> list[dict]:
    root = out / precision
    subprocess.run([sys.executable, "-m", "cldiff_bench.cli", "run", "--strategy", "gd", "--stream", "digits-5",
                    "--profile", "tiny", "--precision", precision, "--seeds", seeds, "--no-progress",
                    "--out", str(root)], check=True)
    return [json.loads(p.read_text()) for p in sorted(root.glob("digits-5/tiny/gd/seed*/result.json"))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        results = {precision: run_cells(out, precision, args.seeds) for precision in PRECISIONS}
    rows, failed = [], 0
    for metric in METRICS:
        stats = {pr: mean_and_standard_error([r["metrics"][metric][-1] for r in results[pr]]) for pr in PRECISIONS}
        (m32, se32), (m16, se16) = stats["fp32"], stats["bf16"]
        allowed = 2 * math.sqrt((se32 or 0.0) ** 2 + (se16 or 0.0) ** 2)
        ok = abs(m16 - m32) <= allowed
        failed += not ok
        rows.append([metric, f"{m32:.4g} ± {se32 or 0:.2g}", f"{m16:.4g} ± {se16 or 0:.2g}", f"{m16 - m32:+.3g}",
                     f"{allowed:.3g}", "within noise" if ok else "DIFFERENT"])
    print(tabulate(rows, headers=["metric (last task)", "fp32", "bf16", "difference", "2 x combined SE", ""]))
    print(f"{len(results['fp32'])} seeds each; gd on digits-5 at the tiny profile")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
