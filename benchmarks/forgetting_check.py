"""Does the suite still measure forgetting? A CI guard that fails when the board would stop telling strategies apart.

    python benchmarks/forgetting_check.py [--out DIR]

It runs naive, joint and gd (seed 0) on the offline digits stream at the `cpu` profile's choices (16 x 16 images,
cosine learning rate, EMA sampling), shortened to fit CI (see RUN_ARGS), two cells side by side with one thread
each, and checks after the last task:

- joint beats naive on KLD by a factor and on the solver's accuracy by a margin (the lower and upper bounds apart);
- gd beats naive on KLD and FID by a factor (the teacher's replay reaches the student).

Exit status 1, with the numbers, when a check fails; 0 otherwise. The margins are a small fraction of the gaps measured
when the check was made (docs/rulers.md, "The CI guard", gives them), so a change that shrinks a gap several
times fails, and the rounding of another machine does not.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

STREAM, PROFILE = "digits-5", "cpu"
RUN_ARGS = ["--model", "tiny", "--iterations", "100", "--batch-size", "32", "--warmup-iterations", "10",
            "--num-generated", "300"]
STRATEGIES = ("gd", "naive", "joint")  # the longest first: gd runs beside naive, then joint
# (better, worse, metric, how it must be better): a factor on KLD and FID, an absolute margin on accuracy. gd's
# accuracy is not checked: at this size its solver trains 10 steps per task, too few to learn from replay (on the
# board's budget it trains ten times as long). gd against gr would need a fourth run, beyond CI's 3 minutes.
CHECKS = [("joint", "naive", "kld", ("factor", 4.0)), ("joint", "naive", "accuracy", ("margin", 0.25)),
          ("gd", "naive", "kld", ("factor", 3.0)), ("gd", "naive", "fid", ("factor", 1.25))]


def run_cells(out: Path) -> dict[str, dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLDIFF_BENCH_CACHE": str(out / "cache")}
    # The evaluation classifier first, once, so the cells side by side do not both train it.
    subprocess.run([sys.executable, "-m", "cldiff_bench.cli", "train-evaluator", "--stream", STREAM, "--profile",
                    PROFILE, "--no-progress"], check=True, env={**env, "OMP_NUM_THREADS": "2"},
                   stdout=subprocess.DEVNULL)
    pending, running, results = list(STRATEGIES), {}, {}
    while pending or running:
        while pending and len(running) < 2:
            strategy = pending.pop(0)
            cmd = [sys.executable, "-m", "cldiff_bench.cli", "run", "--strategy", strategy, "--stream", STREAM,
                   "--profile", PROFILE, "--threads", "1", "--no-progress", "--out", str(out), *RUN_ARGS]
            log = open(out / f"{strategy}.log", "w")
            running[strategy] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
        time.sleep(0.5)
        for strategy, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[strategy]
            if proc.returncode != 0:
                sys.exit(f"forgetting check: the {strategy} run failed:\n" + Path(log.name).read_text()[-2000:])
            path = out / STREAM / PROFILE / strategy / "seed0" / "result.json"
            results[strategy] = json.loads(path.read_text())["tasks"][-1]["metrics"]
    return results


def judge(final: dict[str, dict]) -> list[dict]:
    rows = []
    for better, worse, metric, (kind, amount) in CHECKS:
        b, w = final[better][metric], final[worse][metric]
        if kind == "factor":  # lower is better
            ok, need = b * amount < w, f"{better} x {amount:g} < {worse}"
        else:                 # higher is better
            ok, need = b > w + amount, f"{better} > {worse} + {amount:g}"
        rows.append({"metric": metric, "better": better, "worse": worse, "values": [b, w], "needs": need,
                     "passed": bool(ok)})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = p.parse_args(argv)
    began = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        final = run_cells(out)
    rows = judge(final)
    print(tabulate([[r["metric"], r["needs"], f"{r['values'][0]:.4g} vs {r['values'][1]:.4g}",
                     "pass" if r["passed"] else "FAIL"] for r in rows],
                   headers=["metric", "check", "values", ""], tablefmt="github"))
    seconds = time.time() - began
    print(f"forgetting check: {seconds:.0f} s")
    failed = [r for r in rows if not r["passed"]]
    if failed:
        print("forgetting check FAILED: the suite no longer separates "
              + "; ".join(f"{r['better']} from {r['worse']} on {r['metric']}" for r in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
