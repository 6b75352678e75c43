"""Timers, FLOP counts and the matmul peak the achieved throughput is set against."""
from __future__ import annotations

import statistics
import time
from typing import Callable, Hashable

import torch
from torch.utils.flop_counter import FlopCounterMode

from cldiff_bench.cost import synchronize


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure(variants: dict[Hashable, Callable[[], object]], device: torch.device, warmup: int,
            repeats: int) -> dict[Hashable, float]:
    """Median seconds per call of each variant. Variants take turns within every round, so drift in the machine's
    load (other jobs, clocks, temperature) is shared by all of them instead of landing on whichever ran last."""
    times: dict[Hashable, list[float]] = {name: [] for name in variants}
    for round_ in range(warmup + repeats):
        for name, fn in variants.items():
            seconds = timed(fn, device)
            if round_ >= warmup:
                times[name].append(seconds)
    return {name: statistics.median(ts) for name, ts in times.items()}


def forward_flops(model: torch.nn.Module, image_shape, device: torch.device, unwrap=lambda out: out) -> int:
    """FLOPs of one forward on one image (a multiply-add counts 2), from the convolutions, matmuls and attention."""
    x = torch.randn(1, *image_shape, device=device)
    t = torch.tensor([500], device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unwrap(model(x, t))
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """FLOP/s of a large square matmul: the practical ceiling for a network made of convolutions and matmuls."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    timed(lambda: a @ b, device)
    seconds = statistics.median(timed(lambda: a @ b, device) for _ in range(reps))
    return 2 * n**3 / seconds


def conv_peak(device: torch.device, dtype: torch.dtype, batch: int, reps: int) -> float:
    """FLOP/s of a large 3x3 convolution. On CPUs whose BLAS is slow (MKL on AMD) the convolution library outruns the
    matmul, so the matmul alone is not a ceiling for a convolutional network."""
    conv = torch.nn.Conv2d(512, 512, 3, padding=1, bias=False).to(device=device, dtype=dtype)
    x = torch.randn(batch, 512, 16, 16, device=device, dtype=dtype)
    with torch.no_grad():
        timed(lambda: conv(x), device)
        seconds = statistics.median(timed(lambda: conv(x), device) for _ in range(reps))
    return 2 * batch * 16 * 16 * 512 * 512 * 9 / seconds


def largest_batch(probe: Callable[[int], object], start: int, cap: int) -> int:
    """The largest power-of-two multiple of `start`, up to `cap`, at which `probe(batch)` runs without running out
    of GPU memory."""
    best, batch = None, start
    while batch <= cap:
        try:
            probe(batch)
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        best, batch = batch, batch * 2
    if best is None:
        raise RuntimeError(f"even a batch of {start} does not fit in GPU memory")
    return best
