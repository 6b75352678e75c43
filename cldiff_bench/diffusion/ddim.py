"""DDIM sampling (Song et al., 2021) with "trailing" timestep spacing, as used by the study.

The sampler holds no model: any callable output = model(x_t, t) can be sampled, which is how teachers, students and
distilled few-step models share one interface; what the output means (epsilon, v or x0) is the `prediction` passed
to `sample` (see parameterisation.py). Registered as the sampler "ddim" (samplers.py), the default.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .parameterisation import X0_DENOMINATOR_EPSILON, check_prediction, x0_and_eps
from .schedule import NoiseSchedule
from .seeding import per_sample_normal

EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # or a v / x0 model: see `sample`'s prediction

# Zero terminal SNR makes alpha_bar at t = T-1 exactly 0, so x0 = (x - sqrt(1-a) eps) / sqrt(a) divides by zero.
# The study's code divides by sqrt(alpha_bar + 1e-8) at every step (not only the terminal one) and relies on the
# clamp of x0 to [-1, 1]; so do we. A floor, max(alpha_bar, 1e-8), is not the same: the added 1e-8 shifts every step
# a little, and over 100 steps the two drift apart by O(1). (The constant lives in parameterisation.py.)


def trailing_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """[999, 499] for 2 steps, [999, 899, ..., 99] for 10: diffusers' "trailing" spacing."""
    if num_steps < 1 or num_steps > num_train_timesteps:
        raise ValueError(f"DDIM steps must be in 1..{num_train_timesteps}, got {num_steps}")
    grid = np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps)).astype(np.int64) - 1
    return [int(t) for t in grid]


class DDIMSampler:
    """Deterministic (eta = 0) or stochastic DDIM over a fixed timestep grid, built once per (schedule, steps)."""

    def __init__(self, schedule: NoiseSchedule, num_steps: int, eta: float = 0.0, clip_x0: bool = True,
                 x0_epsilon: float = X0_DENOMINATOR_EPSILON):
        """`x0_epsilon`: added to alpha_bar under the square root of x0's denominator (the study's 1e-8; 0 is
        diffusers' arithmetic, which divides by zero at the terminal step)."""
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.schedule = schedule
        self.num_steps = num_steps
        self.eta = float(eta)
        self.clip_x0 = clip_x0
        self.x0_epsilon = float(x0_epsilon)
        T = schedule.num_timesteps
        self.timesteps = trailing_timesteps(num_steps, T)
        stride = T // num_steps  # diffusers' previous-timestep rule, kept for numerical parity
        ab = schedule.alpha_bar
        ab_t = ab[self.timesteps]
        prev = [t - stride for t in self.timesteps]
        ab_prev = torch.stack([ab[p] if p >= 0 else torch.ones((), device=ab.device) for p in prev])
        # Per-step coefficients as device tensors, indexed by step number in the loop.
        self._ab_t = ab_t
        self._ab_prev = ab_prev
        self._t_tensor = torch.tensor(self.timesteps, device=ab.device, dtype=torch.long)
        # The study's variance also adds the epsilon to alpha_bar_prev (only eta > 0 reads it).
        variance = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / (ab_prev + self.x0_epsilon))
        self._sigma = self.eta * variance.clamp_min(0).sqrt()

    @property
    def settings(self) -> dict:
        return {"sampler": "ddim", "steps": self.num_steps, "eta": self.eta, "clip_x0": self.clip_x0,
                "timestep_spacing": "trailing", "timesteps": list(self.timesteps),
                "x0_denominator": f"sqrt(alpha_bar + {self.x0_epsilon:g})"}

    def step(self, eps: torch.Tensor, i: int, x: torch.Tensor, noise: torch.Tensor | None = None,
             prediction: str = "epsilon"):
        """One DDIM update from step i of the grid; returns (x_prev, predicted x0). `eps` is the model's output,
        the noise for an epsilon model (else its v or x0: `prediction`)."""
        ab_t, ab_prev, sigma = self._ab_t[i], self._ab_prev[i], self._sigma[i]
        # As diffusers does, eps stays as predicted when x0 is clipped.
        x0, eps = x0_and_eps(eps, x, ab_t, prediction, self.x0_epsilon)
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        direction = (1 - ab_prev - sigma**2).clamp(0.0, 1.0).sqrt() * eps
        x_prev = ab_prev.sqrt() * x0 + direction
        if noise is not None and self.eta > 0:
            x_prev = x_prev + sigma * noise
        return x_prev, x0

    @torch.no_grad()
    def sample(self, model: EpsModel, seeds: Sequence[int], image_shape: Sequence[int],
               device=None, dtype=torch.float32, prediction: str = "epsilon") -> torch.Tensor:
        """Draw len(seeds) images; image i depends only on seeds[i] (and the model), never on the batch."""
        check_prediction(prediction)
        device = device if device is not None else self.schedule.device
        draws = 1 + (self.num_steps if self.eta > 0 else 0)
        noise = per_sample_normal(seeds, (draws, *image_shape), device=device, dtype=dtype)
        x = noise[:, 0]
        n = x.shape[0]
        for i in range(self.num_steps):
            t = self._t_tensor[i].expand(n)
            eps = model(x, t)
            x, _ = self.step(eps.to(x.dtype), i, x, noise[:, 1 + i] if self.eta > 0 else None, prediction)
        return x
