"""Reproducible randomness that does not depend on batch size, device or how a run was resumed.

Every random draw in a run is keyed by what it is for (task, iteration, sample index ...) rather than taken from
a global stream, so a run restarted at iteration j draws exactly what the uninterrupted run drew there.
"""
from __future__ import annotations

import contextlib
import math
from typing import Sequence

import numpy as np
import torch

from . import counter_rng

_MASK63 = (1 << 63) - 1


def derive_seed(*keys: int) -> int:
    """One 63-bit seed from a tuple of non-negative integers (SeedSequence hashing, so nearby keys decorrelate)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 32 | int(state[1])) & _MASK63)


def derive_seeds(n: int, *keys: int) -> list[int]:
    """n per-sample seeds for the draw identified by `keys`."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2 * n, dtype=np.uint32)
    pairs = state.astype(np.uint64).reshape(n, 2)
    return [int(((int(a) << 32) | int(b)) & _MASK63) for a, b in pairs]


def generator(*keys: int) -> torch.Generator:
    """A CPU generator for the draw identified by `keys`."""
    return torch.Generator().manual_seed(derive_seed(*keys))


def per_sample_normal(seeds: Sequence[int], shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of shape (len(seeds), *shape) where row i depends only on seeds[i].

    Counter-based (see counter_rng): element j of a row is a function of (seeds[i], j) alone, drawn for all rows
    at once on the device, so a row is the same in any batch, at any position and on any device, and a draw of a
    shape with more elements starts with the same numbers.
    """
    shape = tuple(int(d) for d in shape)
    device = torch.device(device) if device is not None else torch.device("cpu")
    # The arithmetic needs int64 and float64, which CPUs and CUDA GPUs have; elsewhere it runs on the CPU.
    work = device if device.type in ("cpu", "cuda") else torch.device("cpu")
    keys = torch.tensor([counter_rng.as_int64(s) for s in seeds], dtype=torch.int64, device=work)
    normal = counter_rng.normal(keys, math.prod(shape))
    return normal.to(dtype).reshape(len(seeds), *shape).to(device)


@contextlib.contextmanager
def keyed_global_rng(device: torch.device, *keys: int):
    """Seed torch's global generators (CPU and `device`) from `keys` for the block, then restore them: for what
    draws from the global state by design, such as dropout, so it too is reproducible and resumable."""
    device = torch.device(device)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        seed = derive_seed(*keys)
        torch.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield
