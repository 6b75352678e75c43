"""The distillation update of `cldiff-bench distill` (cldiff_bench/distill), timed and its memory peak measured.

PD's update evaluates the network 3 times per image (2 teacher steps, 1 student forward, then its backward), DSD's
2 times (one forward serves its first target step and its double step, one more forward without gradient), so at
equal per-forward cost DSD makes 3/2 as many updates per second, less the shared backward; and DSD holds one model
(with its optimizer state and EMA) where PD also holds the frozen teacher.

Timing: both methods' updates take turns (perf_timing.measure). Memory: each method in a fresh process (this file
with --worker), so neither inherits the other's heap: on a GPU the peak of tensors allocated, on a CPU the process's
peak resident set (Linux restarts its count after the models are built; the interpreter and torch are in both).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from cldiff_bench.core import DiffusionCore
from cldiff_bench.cost import CostMeter
from cldiff_bench.diffusion.unet import model_config
from cldiff_bench.distill import DistillOptions
from cldiff_bench.distill.engine import Distillation
from cldiff_bench.distill.objective import student_config
from cldiff_bench.registry import load_registry

METHODS = ("pd", "dsd")
FROM_STEPS = 64


def build_engine(method: str, preset: str, image_shape, device: torch.device, batch: int) -> Distillation:
    """A distillation of the preset's network at its first halving round (64 -> 32 steps). The teacher is taken
    as a v model, so that DSD too starts with a halving round (an epsilon teacher's conversion round is a PD-like
    update with one teacher step)."""
    registry = load_registry()
    config = student_config(model_config(preset, registry.model_preset(preset), image_shape[0]))
    core = DiffusionCore(config, image_shape, device, CostMeter(device))
    options = DistillOptions(method=method, target_steps=FROM_STEPS // 2, from_steps=FROM_STEPS, updates=10**9,
                             batch_size=batch)
    engine = Distillation(core, registry.distiller(method), options, config, core.model, keys=(0,))
    engine.begin_round()
    return engine


def timing_rows(preset: str, image_shape, device: torch.device, batch: int, warmup: int, repeats: int,
                measure) -> list[dict]:
    engines = {m: build_engine(m, preset, image_shape, device, batch) for m in METHODS}
    # Counted from here: the chains' spread along the path at the round's start is not an update's.
    start = {m: engines[m].core.meter.snapshot()["counts"] for m in METHODS}
    seconds = measure({m: engines[m].step for m in METHODS}, device, warmup, repeats)
    rows = []
    for m in METHODS:
        counts = CostMeter.difference(engines[m].core.meter.snapshot(), {"counts": start[m],
                                                                         "seconds": {}})["counts"]
        images = batch * (warmup + repeats)
        rows.append({"figure": "distill", "method": m, "batch": batch, "updates_per_s": 1.0 / seconds[m],
                     "images_per_s": batch / seconds[m], "seconds_per_update": seconds[m],
                     "forwards_per_update_per_image": load_registry().distiller(m).forwards_per_update,
                     "counted_forwards_per_update_per_image":
                         (counts["student_forward"] + counts["teacher_forward"]) / images,
                     "backwards_per_update_per_image": counts["student_backward"] / images})
    return rows


def memory_peaks(preset: str, image_shape, device: torch.device, batch: int, updates: int) -> dict[str, dict]:
    """{method: peak memory} of `updates` updates, each method in a fresh process."""
    here = Path(__file__).resolve()
    peaks = {}
    for m in METHODS:
        out = subprocess.run([sys.executable, str(here), "--worker", m, "--preset", preset, "--shape",
                              ",".join(map(str, image_shape)), "--device", str(device), "--batch", str(batch),
                              "--updates", str(updates), "--threads", str(torch.get_num_threads())],
                             check=True, capture_output=True, text=True, cwd=here.parent)
        peaks[m] = json.loads(out.stdout.strip().splitlines()[-1])
    return peaks


def report_rows(rows: list[dict], peaks: dict[str, dict]) -> list[list]:
    by = {r["method"]: r for r in rows}
    lines = []
    for m in METHODS:
        peak = peaks.get(m, {})
        lines.append([m, by[m]["batch"], f"{by[m]['updates_per_s']:.3f}", by[m]["forwards_per_update_per_image"],
                      f"{by[m]['counted_forwards_per_update_per_image']:.2f}",
                      f"{peak.get('peak_bytes', float('nan')) / 2**20:.0f} MiB ({peak.get('what', '-')})"])
    return lines


def ratio_row(rows: list[dict]) -> dict:
    by = {r["method"]: r for r in rows}
    return {"dsd_over_pd_updates_per_s": by["dsd"]["updates_per_s"] / by["pd"]["updates_per_s"],
            "analytic_forwards_ratio": by["pd"]["forwards_per_update_per_image"]
            / by["dsd"]["forwards_per_update_per_image"],
            # A backward costs about two forwards: (3 + 2) / (2 + 2) with it counted.
            "analytic_with_backward": (by["pd"]["forwards_per_update_per_image"] + 2)
            / (by["dsd"]["forwards_per_update_per_image"] + 2)}


def _worker(argv) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", choices=METHODS, required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--shape", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--updates", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = tuple(int(s) for s in args.shape.split(","))
    engine = build_engine(args.worker, args.preset, shape, device, args.batch)
    meter = engine.core.meter
    meter.reset_peak_memory()
    with meter.phase("teacher_distillation"):
        for _ in range(args.updates):
            engine.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak, what = int(torch.cuda.max_memory_allocated(device)), "GPU memory allocated"
    else:
        phase = meter.peak_memory()["peak_memory_by_phase"].get("teacher_distillation", {})
        peak, what = phase.get("rss_bytes", meter.peak_memory()["peak_rss_bytes"]), "peak RSS"
    print(json.dumps({"method": args.worker, "peak_bytes": peak, "what": what,
                      "parameters": sum(p.numel() for p in engine.model.parameters())}))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
