"""Speed of the suite's diffusion core against the reference stack (diffusers' UNet2DModel + DDIMScheduler).

    python benchmarks/perf.py [--quick] [--device cpu|cuda] [--stream fmnist|cifar10|both] [--json OUT.json]
                              [--distill-only]

Figures, each timed for the reference, ours with bf16 where the hardware has it natively, and ours in float32,
taking turns:
  train      one training step (forward, MSE eps loss, backward, grad-norm clip, Adam step)
  generate   teacher replay generation (DDIM, no grad), also at 4x the batch: what --replay-ahead 4 would get
  iteration  one full naive / gr / gd training iteration from task 2 on (the registered strategies)
  evaluate   evaluation sampling (10-step DDIM) at the largest batch that fits
  distill    one update of progressive distillation (pd) and of direct self-distillation (dsd) on the Fashion-MNIST
             network: updates/s against the analytic 3 : 2 ratio of network evaluations, and each one's memory
             peak in a fresh process (ours only: diffusers has no distillation); --distill-only runs this alone
images/s counts the real images of a batch; the achieved FLOP/s counts a backward as two forwards.
--quick is sized for a small CPU: the Fashion-MNIST network only and smaller batches. Without
it every figure runs at the study's batch sizes on both networks, which is meant for a GPU.
Needs the optional dependency diffusers:  pip install -e ".[bench]"
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    import diffusers
except ImportError:
    sys.exit('benchmarks/perf.py needs diffusers, the reference it compares with: pip install -e ".[bench]"')

import torch
from tabulate import tabulate

from cldiff_bench.core import cpu_supports_bf16, resolve_precision
from cldiff_bench.cost import device_name
import perf_distill
from perf_ours import STREAMS, Ours, strategy_options
from perf_reference import Reference
from perf_timing import conv_peak, forward_flops, largest_batch, matmul_peak, measure

VARIANTS = ("reference", "ours", "ours_fp32")
EVAL_STEPS = 10


@dataclass
class Plan:
    streams: list[str]
    train_batches: list[int]
    generation: list[tuple[int, int]]  # (DDIM steps, batch)
    iteration_batch: int
    eval_batch: int | None             # None: no evaluation figure; 0: the largest that fits on the GPU
    warmup: int
    repeats: int
    peak_size: int
    distill_batch: int = 8
    distill_memory_updates: int = 2
    skipped: list[str] = field(default_factory=list)


def make_plan(args, device: torch.device) -> Plan:
    cuda = device.type == "cuda"
    if args.quick:
        plan = Plan(streams=["fmnist"], train_batches=[32, 128], generation=[(2, 32), (2, 128)], iteration_batch=8,
                    eval_batch=128, warmup=1, repeats=3, peak_size=2048, distill_batch=8,
                    skipped=["10-step generation at batch 128", "2-step generation at batch 512",
                             "iterations at batch 128 (run at batch 8)",
                             "evaluation sampling at the largest batch (run at batch 128)"])
        if (args.stream or "fmnist") == "fmnist":
            plan.skipped.append("the CIFAR-10 network")
    else:
        # Generation at 4 x 128 too: whether drawing 4 iterations' replay at once (--replay-ahead 4) pays.
        plan = Plan(streams=["fmnist", "cifar10"], train_batches=[32, 128],
                    generation=[(2, 128), (10, 128), (2, 512)],
                    iteration_batch=128, eval_batch=0 if cuda else 256, warmup=3 if cuda else 1,
                    repeats=10 if cuda else 3, peak_size=8192 if cuda else 4096, distill_batch=128 if cuda else 32,
                    distill_memory_updates=5)
    if args.stream:
        plan.streams = ["fmnist", "cifar10"] if args.stream == "both" else [args.stream]
    plan.warmup = args.warmup if args.warmup is not None else plan.warmup
    plan.repeats = args.repeats if args.repeats is not None else plan.repeats
    return plan


def analytic_forwards(strategy: str, teacher_steps: int) -> int:
    """Network evaluations per real image, a backward counted as two forwards: the student's forward and backward
    over the real image (3), and for replay strategies over one replayed image (3) made by the teacher's DDIM
    steps, plus gd's one teacher forward for the target."""
    return {"naive": 3, "gr": 6 + teacher_steps, "gd": 7 + teacher_steps}[strategy]


class StreamBench:
    """The three variants of one stream's network and the rows measured with them."""

    def __init__(self, stream: str, device: torch.device, plan: Plan, precision: str, peaks: dict):
        self.stream, self.device, self.plan, self.peaks = stream, device, plan, peaks
        self.image_shape = STREAMS[stream][2]
        self.precision = {"reference": "fp32", "ours": precision, "ours_fp32": "fp32"}
        self.runners = {"reference": Reference(stream, device), "ours": Ours(stream, device, precision),
                        "ours_fp32": Ours(stream, device, "fp32")}
        self.flops = {"reference": forward_flops(self.runners["reference"].unet, self.image_shape, device,
                                                 lambda out: out.sample),
                      "ours": forward_flops(self.runners["ours"].core.model, self.image_shape, device)}
        self.flops["ours_fp32"] = self.flops["ours"]
        self.rows: list[dict] = []

    def describe(self) -> dict:
        nets = {"reference": self.runners["reference"].unet, "ours": self.runners["ours"].core.model}
        return {"forward_gflop_per_image": {v: self.flops[v] / 1e9 for v in nets},
                "parameters": {v: sum(p.numel() for p in net.parameters()) for v, net in nets.items()}}

    def images(self, n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(n)
        return (torch.rand(n, *self.image_shape, generator=g) * 2 - 1).to(self.device)

    def row(self, figure: str, name: str, batch: int, forwards_per_image: int, work) -> dict:
        seconds = measure({v: (lambda r=r: work(r)) for v, r in self.runners.items()}, self.device,
                          self.plan.warmup, self.plan.repeats)
        return self.record(figure, name, batch, forwards_per_image, seconds)

    def record(self, figure: str, name: str, batch: int, forwards_per_image: int, seconds: dict) -> dict:
        ips = {v: batch / s for v, s in seconds.items()}
        achieved = {v: self.flops[v] * forwards_per_image * ips[v] for v in VARIANTS}
        peak = {v: self.peaks[self.precision[v]] for v in VARIANTS}
        row = {"stream": self.stream, "figure": figure, "name": name, "batch": batch,
               **{f"{v}_images_per_s": ips[v] for v in VARIANTS},
               "ours_over_reference": ips["ours"] / ips["reference"],
               "ours_fp32_over_reference": ips["ours_fp32"] / ips["reference"],
               "seconds_per_call": seconds, "forwards_per_image": forwards_per_image,
               "achieved_flop_per_s": achieved,
               "fraction_of_matmul_peak": {v: achieved[v] / peak[v]["matmul"] for v in VARIANTS},
               "fraction_of_ceiling": {v: achieved[v] / peak[v]["ceiling"] for v in VARIANTS}}
        self.rows.append(row)
        print(f"  {self.stream} {name} (batch {batch}): " + ", ".join(f"{v} {ips[v]:.1f}" for v in VARIANTS)
              + " images/s", flush=True)
        return row

    def run(self) -> list[dict]:
        plan = self.plan
        for b in plan.train_batches:
            x0 = self.images(b)
            self.row("train", "training step", b, 3, lambda r: r.train_step(x0))
        for steps, b in plan.generation:
            self.row("generate", f"replay generation, {steps}-step DDIM", b, steps, lambda r: r.generate(b, steps))
        self.iterations(plan.iteration_batch)
        if plan.eval_batch is not None:
            b = plan.eval_batch or self._largest_eval_batch()
            self.row("evaluate", f"evaluation sampling, {EVAL_STEPS}-step DDIM", b, EVAL_STEPS,
                     lambda r: r.generate(b, EVAL_STEPS))
        return self.rows

    def iterations(self, batch: int) -> None:
        """The naive, gr and gd iterations of all variants taking turns in every round, so that the time ratios
        between strategies, which are set against the analytic counts, share the machine's drift too."""
        x0 = self.images(batch)
        strategies = ("naive", "gr", "gd")
        work = {(s, v): (lambda s=s, r=r: r.iteration(s, x0)) for s in strategies for v, r in self.runners.items()}
        seconds = measure(work, self.device, self.plan.warmup, self.plan.repeats)
        for strategy in strategies:
            steps = strategy_options(self.stream, strategy).get("teacher_steps", 0)
            label = f"{strategy} iteration" + (f" ({steps}-step teacher)" if steps else "")
            row = self.record("iteration", label, batch, analytic_forwards(strategy, steps),
                              {v: seconds[strategy, v] for v in VARIANTS})
            row["strategy"], row["teacher_steps"] = strategy, steps

    def _largest_eval_batch(self, start: int = 256, cap: int = 4096) -> int:
        def probe(b):  # sampling holds no graph, so one step needs what ten need
            for r in self.runners.values():
                r.generate(b, 1)
        return largest_batch(probe, start, cap)


def iteration_ratios(rows: list[dict]) -> list[dict]:
    """Measured time of gd against gr and naive (and gr against naive), beside the analytic NFE ratios."""
    out = []
    for stream in dict.fromkeys(r["stream"] for r in rows):
        it = {r["strategy"]: r for r in rows if r["stream"] == stream and r["figure"] == "iteration"}
        for a, b in (("gd", "gr"), ("gd", "naive"), ("gr", "naive")):
            out.append({"stream": stream, "ratio": f"{a}/{b}", "batch": it[a]["batch"],
                        "analytic": it[a]["forwards_per_image"] / it[b]["forwards_per_image"],
                        **{v: it[a]["seconds_per_call"][v] / it[b]["seconds_per_call"][v] for v in VARIANTS}})
    return out


def report(result: dict) -> str:
    meta, peaks = result["meta"], result["peak_flop_per_s"]
    lines = [f"device: {meta['device_name']}, torch {meta['torch']}, diffusers {meta['diffusers']}, "
             f"ours at {meta['precision_default']} (bf16 opt-in where native) and fp32; reference fp32 eager; "
             f"medians of {meta['repeats']} after {meta['warmup']} warm-up"]
    for dtype, p in peaks.items():
        lines.append(f"{dtype} peak: matmul {meta['peak_size']}^3 {p['matmul'] / 1e9:.1f} GFLOP/s, "
                     f"3x3 conv {p['conv3x3'] / 1e9:.1f} GFLOP/s; %ceil is against the larger")
    for stream, info in result["networks"].items():
        gflop, params = info["forward_gflop_per_image"], info["parameters"]
        lines.append(f"{stream} network: {params['reference'] / 1e6:.2f}M parameters (reference), "
                     f"{params['ours'] / 1e6:.2f}M (ours); forward {gflop['reference']:.3f} GFLOP per image "
                     f"(reference), {gflop['ours']:.3f} (ours)")
    table = [[r["stream"], r["name"], r["batch"], *(f"{r[f'{v}_images_per_s']:.1f}" for v in VARIANTS),
              f"{r['ours_over_reference']:.2f}", f"{r['ours_fp32_over_reference']:.2f}",
              *(f"{100 * r['fraction_of_ceiling'][v]:.0f}%" for v in VARIANTS)] for r in result["rows"]]
    lines += ["", tabulate(table, headers=["stream", "figure", "batch", "ref img/s", "ours img/s", "fp32 img/s",
                                           "ours/ref", "fp32/ref", "ref %ceil", "ours %ceil", "fp32 %ceil"])]
    ratios = [[r["stream"], r["ratio"], r["batch"], f"{r['analytic']:.3f}",
               *(f"{r[v]:.3f}" for v in VARIANTS)] for r in result["iteration_ratios"]]
    lines += ["", "iteration time ratios (measured) against the analytic NFE ratio:",
              tabulate(ratios, headers=["stream", "time ratio", "batch", "analytic", "reference", "ours", "ours fp32"])]
    if result["skipped"]:
        lines += ["", "skipped in this mode: " + "; ".join(result["skipped"])]
    return "\n".join(lines)


def distillation(plan: Plan, device: torch.device) -> dict:
    """PD's and DSD's updates on the Fashion-MNIST network (see perf_distill.py)."""
    _, preset, shape = STREAMS["fmnist"]
    print(f"fmnist: distillation updates at batch {plan.distill_batch}", flush=True)
    rows = perf_distill.timing_rows(preset, shape, device, plan.distill_batch, plan.warmup, plan.repeats, measure)
    memory = perf_distill.memory_peaks(preset, shape, device, plan.distill_batch, plan.distill_memory_updates)
    return {"rows": rows, "memory": memory, "ratio": perf_distill.ratio_row(rows)}


def distillation_report(result: dict) -> str:
    ratio = result["ratio"]
    table = tabulate(perf_distill.report_rows(result["rows"], result["memory"]),
                     headers=["method", "batch", "updates/s", "NFE/update", "counted NFE/update", "memory peak"])
    return (f"\ndistillation updates (fmnist network, 64 -> 32 steps):\n{table}\n"
            f"dsd/pd updates per second {ratio['dsd_over_pd_updates_per_s']:.3f}; analytic "
            f"{ratio['analytic_forwards_ratio']:.3f} by forwards, {ratio['analytic_with_backward']:.3f} with the "
            f"backward as two forwards")


def distill_figure(plan: Plan, device: torch.device, json_path: Path | None) -> int:
    started = datetime.datetime.now(datetime.timezone.utc)
    result = {"meta": {"date": started.isoformat(timespec="seconds"), "mode": "distill-only",
                       "torch": torch.__version__, "device": str(device), "device_name": device_name(device),
                       "threads": torch.get_num_threads(), "warmup": plan.warmup, "repeats": plan.repeats},
              "distillation": distillation(plan, device)}
    elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    result["meta"]["elapsed_s"] = elapsed
    print(distillation_report(result["distillation"]))
    print(f"\ndistill-only took {elapsed:.0f} s")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {json_path}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10-15 minutes on a 2-core CPU")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--stream", choices=["fmnist", "cifar10", "both"], default=None)
    p.add_argument("--json", type=Path, default=None, help="write the figures to this file")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--distill-only", action="store_true", help="only the distillation figure")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda requested, but no CUDA GPU is available here")
    plan = make_plan(args, device)
    # `ours` is the fastest setting the hardware runs natively (bf16 is an opt-in of every profile, fp32 their
    # default); `ours_fp32` is always measured beside it.
    native_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_supports_bf16()
    precision = resolve_precision("bf16" if native_bf16 else "fp32", device)
    started = datetime.datetime.now(datetime.timezone.utc)
    if args.distill_only:
        return distill_figure(plan, device, args.json)

    peaks = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        p = {"matmul": matmul_peak(device, dtype, plan.peak_size, reps=5),
             "conv3x3": conv_peak(device, dtype, plan.peak_size // 64, reps=5)}
        peaks[name] = {**p, "ceiling": max(p.values())}
    rows, networks = [], {}
    for stream in plan.streams:
        print(f"{stream}: building the networks", flush=True)
        bench = StreamBench(stream, device, plan, precision, peaks)
        networks[stream] = bench.describe()
        rows += bench.run()
        del bench
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    elapsed = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    meta = {"date": started.isoformat(timespec="seconds"), "elapsed_s": elapsed,
            "mode": "quick" if args.quick else "full",
            "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
            "device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
            "precision_default": precision, "cpu_bf16": cpu_supports_bf16(), "warmup": plan.warmup,
            "repeats": plan.repeats, "peak_size": plan.peak_size}
    if device.type == "cuda":
        meta["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    result = {"meta": meta, "peak_flop_per_s": peaks, "networks": networks, "rows": rows,
              "iteration_ratios": iteration_ratios(rows), "skipped": plan.skipped,
              "distillation": distillation(plan, device)}
    print()
    print(report(result))
    print(distillation_report(result["distillation"]))
    print(f"\n{meta['mode']} mode took {elapsed:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
