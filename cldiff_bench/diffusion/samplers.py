"""Samplers as named, registered things (k-diffusion style: one call signature, one small class per sampler).

A sampler is built as `build(schedule, steps, eta)` and draws with

    sampler.sample(model, seeds, image_shape, device=None, dtype=torch.float32, prediction="epsilon")

image i a function of seeds[i] alone, whatever the batch (the contract tests/test_samplers.py checks for every
registered sampler); `sampler.settings` is what a result records of it. The built-in ones are below; a plugin adds
its own through the `cldiff_bench_samplers` hook (registry/hookspecs.py), which the built-in plugin implements too.
"DDIM" is the default everywhere and the study's sampler.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from .ddim import DDIMSampler
from .parameterisation import X0_DENOMINATOR_EPSILON, check_prediction, x0_and_eps
from .schedule import NoiseSchedule
from .seeding import per_sample_normal

DEFAULT_SAMPLER = "ddim"


class Sampler(Protocol):
    num_steps: int

    @property
    def settings(self) -> dict: ...

    def sample(self, model, seeds: Sequence[int], image_shape: Sequence[int], device=None,
               dtype=torch.float32, prediction: str = "epsilon") -> torch.Tensor: ...


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    description: str
    build: Callable[[NoiseSchedule, int, float], Sampler]  # (schedule, steps, eta) -> sampler
    stochastic: bool = False  # whether eta > 0 means anything to it


class DPMSolverPP2M:
    """DPM-Solver++(2M) (Lu et al., 2022), deterministic, on DDIM's trailing grid: the multistep second-order
    solver of the probability-flow ODE in x0 (data) prediction.

    It starts and ends with first-order steps: at t = T - 1 the log-SNR is -inf under zero terminal SNR (the first
    step is then DDIM's with eps = x_t), and the last step lands on alpha_bar = 1, +inf. x0 is clipped as DDIM's."""

    def __init__(self, schedule: NoiseSchedule, num_steps: int, eta: float = 0.0, clip_x0: bool = True,
                 x0_epsilon: float = X0_DENOMINATOR_EPSILON):
        if eta != 0:
            raise ValueError("dpmpp-2m is deterministic: eta must be 0")
        grid = DDIMSampler(schedule, num_steps, 0.0, clip_x0, x0_epsilon)  # the same timesteps and landing points
        self.schedule, self.num_steps, self.clip_x0, self.x0_epsilon = schedule, num_steps, clip_x0, x0_epsilon
        self.timesteps = grid.timesteps
        self._t = grid._t_tensor
        ab = torch.cat([grid._ab_t[:1], grid._ab_prev]).double()  # alpha_bar at each point visited, then the end
        self._alpha, self._sigma = ab.sqrt().float(), (1 - ab).sqrt().float()
        self._ab_t = grid._ab_t
        # Log-SNR steps h_i = lambda_{i+1} - lambda_i in float64 (inf where an end has zero SNR or zero noise).
        lam = (ab.sqrt().log() - (1 - ab).sqrt().log())
        self._h = (lam[1:] - lam[:-1]).tolist()

    @property
    def settings(self) -> dict:
        return {"sampler": "dpmpp-2m", "steps": self.num_steps, "eta": 0.0, "clip_x0": self.clip_x0,
                "timestep_spacing": "trailing", "timesteps": list(self.timesteps)}

    @torch.no_grad()
    def sample(self, model, seeds: Sequence[int], image_shape: Sequence[int], device=None, dtype=torch.float32,
               prediction: str = "epsilon") -> torch.Tensor:
        check_prediction(prediction)
        device = device if device is not None else self.schedule.device
        x = per_sample_normal(seeds, (1, *image_shape), device=device, dtype=dtype)[:, 0]
        previous_x0 = None
        for i in range(self.num_steps):
            out = model(x, self._t[i].expand(x.shape[0])).to(x.dtype)
            x0, _ = x0_and_eps(out, x, self._ab_t[i], prediction, self.x0_epsilon)
            if self.clip_x0:
                x0 = x0.clamp(-1.0, 1.0)
            h, h_prev = self._h[i], self._h[i - 1] if i > 0 else float("inf")
            last = i == self.num_steps - 1
            d = x0
            if previous_x0 is not None and not last and h_prev != float("inf"):
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
            alpha_next, sigma_next, sigma = self._alpha[i + 1], self._sigma[i + 1], self._sigma[i]
            # x_{i+1} = (sigma_{i+1} / sigma_i) x_i + alpha_{i+1} (1 - e^{-h}) D, with e^{-inf} = 0.
            x = (sigma_next / sigma) * x + (alpha_next * (1.0 - math.exp(-h))) * d
            previous_x0 = x0
        return x


BUILTIN_SAMPLERS: dict[str, SamplerSpec] = {s.name: s for s in (
    SamplerSpec("ddim", "DDIM (Song et al., 2021), trailing timesteps, x0 clipped: the study's sampler",
                DDIMSampler, stochastic=True),
    SamplerSpec("dpmpp-2m", "DPM-Solver++(2M) (Lu et al., 2022), deterministic, on DDIM's grid", DPMSolverPP2M),
)}


def get_sampler(name: str, samplers: dict[str, SamplerSpec] | None = None) -> SamplerSpec:
    """The sampler registered as `name` (among `samplers`, by default the built-in ones)."""
    samplers = BUILTIN_SAMPLERS if samplers is None else samplers
    if name not in samplers:
        from ..errors import unknown_name
        raise unknown_name("sampler", name, samplers)
    return samplers[name]
