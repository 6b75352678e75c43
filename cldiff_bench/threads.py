"""How many threads a run uses, and whether it shares its cores with another process.

PyTorch starts one OpenMP thread per core, and its threads spin while they wait for each other: when another
process holds one of the cores, every parallel region waits for the thread that shares it, and a run on a 2-core
machine went from 170 ms to 580 ms per training step, where one thread took 220 ms. So a run's default is one
thread per core that is idle when it starts (never more than torch would start), and a run that finds another
process on its cores while it trains says so once.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

PROC_STAT = Path("/proc/stat")
# How long the machine's load is sampled before a run picks its threads.
SAMPLE_SECONDS = 0.2
# A process using at least this share of a core counts as competing for the run's cores.
COMPETING_CORES = 0.5


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _busy_and_total_seconds() -> tuple[float, float] | None:
    """(busy, all) CPU seconds of the whole machine since boot, summed over its cores; None where unknown."""
    try:
        fields = [float(v) for v in PROC_STAT.read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields) - idle) / hz, sum(fields) / hz


def idle_cores(sample_seconds: float = SAMPLE_SECONDS) -> float | None:
    """Cores left idle by every other process over a short sample (None where the machine does not say)."""
    before, ours_before = _busy_and_total_seconds(), time.process_time()
    if before is None:
        return None
    start = time.monotonic()
    time.sleep(sample_seconds)
    after, wall = _busy_and_total_seconds(), time.monotonic() - start
    if after is None or wall <= 0:
        return None
    others = max(0.0, (after[0] - before[0]) - (time.process_time() - ours_before)) / wall
    return max(0.0, os.cpu_count() - others) if os.cpu_count() else None


def default_threads() -> int:
    """One thread per idle core, at least one, and at most what torch starts (OMP_NUM_THREADS, or one per core)."""
    most = torch.get_num_threads()
    if most <= 1:
        return 1
    idle = idle_cores()
    if idle is None:
        return most
    return max(1, min(most, int(idle + 0.5), usable_cores()))


class CoreSharingWatch:
    """Measures, over a stretch of training, how much CPU other processes take; `check` returns a one-line hint
    when they take a core this run's threads need (once per watch)."""

    def __init__(self, threads: int):
        self.threads = threads
        self.start = (_busy_and_total_seconds(), time.process_time(), time.monotonic())
        self.done = False

    def check(self, iterations: int) -> str | None:
        if self.done:
            return None
        self.done = True
        (before, ours_before, wall_before), now = self.start, _busy_and_total_seconds()
        wall = time.monotonic() - wall_before
        if before is None or now is None or wall <= 0:
            return None
        others = ((now[0] - before[0]) - (time.process_time() - ours_before)) / wall
        spare = (os.cpu_count() or 1) - others
        if others < COMPETING_CORES or self.threads <= spare + 0.25:
            return None
        return (f"cldiff-bench: hint: other processes are using {others:.1f} of this machine's {os.cpu_count()} "
                f"cores, and this run's {self.threads} threads wait for each other on the shared ones "
                f"({1000 * wall / max(iterations, 1):.0f} ms per iteration); a run with --threads "
                f"{max(1, int(spare + 0.5))} would not")
