"""The arithmetic the distillation methods share: the step grids, a teacher's deterministic DDIM step, the
closed-form target x~ of progressive distillation and the truncated-SNR weight.

Notation (Salimans & Ho, 2022): z_t = alpha_t x + sigma_t eps, alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar).
A round distils a teacher sampled with N steps into a student sampled with N / k (k = 2 halves the steps, k = 1
only changes the prediction type). The teacher's grid is DDIM's trailing timesteps for N steps followed by the end,
t = -1 with alpha_bar = 1 (the clean image); student step i goes from grid point k i to k (i + 1).

Every step goes from one grid point to the next. DDIMSampler's landing point t - T // N is the next grid point
whenever N divides T = 1000 (1, 2, 4, 8 steps); at 16 steps and more the two differ by a timestep at some steps.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..diffusion.ddim import trailing_timesteps
from ..diffusion.parameterisation import X0_DENOMINATOR_EPSILON, per_sample, x0_and_eps
from ..diffusion.schedule import NoiseSchedule
from ..diffusion.unet import UNetConfig

# The prediction type of every distilled model: under zero terminal SNR an epsilon model cannot say what x0 is at
# the first step (alpha = 0), and a one-step student has nothing but that step.
STUDENT_PREDICTION = "v"


def student_config(teacher: UNetConfig) -> UNetConfig:
    """A distilled student's configuration: the teacher's architecture, v prediction."""
    return replace(teacher, prediction=STUDENT_PREDICTION)


def step_grid(schedule: NoiseSchedule, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(timesteps, alpha_bar) of the `steps`-step grid and its end: steps + 1 points, the last t = -1, alpha_bar 1."""
    timesteps = trailing_timesteps(steps, schedule.num_timesteps)
    ab = schedule.alpha_bar
    t = torch.tensor(timesteps + [-1], device=ab.device, dtype=torch.long)
    alpha_bar = torch.cat([ab[t[:-1]], torch.ones(1, device=ab.device, dtype=ab.dtype)])
    return t, alpha_bar


def transition(x0: torch.Tensor, eps: torch.Tensor, alpha_bar_to: torch.Tensor) -> torch.Tensor:
    """The deterministic DDIM update to the noise level alpha_bar_to: alpha_to x0 + sigma_to eps."""
    return alpha_bar_to.sqrt() * x0 + (1 - alpha_bar_to).sqrt() * eps


def ddim_step(output: torch.Tensor, z: torch.Tensor, alpha_bar: torch.Tensor, alpha_bar_to: torch.Tensor,
              prediction: str, clip_x0: bool = True) -> torch.Tensor:
    """A model's deterministic DDIM step from z (at alpha_bar) to alpha_bar_to, as DDIMSampler takes it: x0 clipped
    (the study's sampler clips), eps as predicted, an epsilon model's x0 divided by sqrt(alpha_bar + 1e-8)."""
    x0, eps = x0_and_eps(output, z, alpha_bar, prediction, X0_DENOMINATOR_EPSILON)
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
    return transition(x0, eps, alpha_bar_to)


def pd_target(z_t: torch.Tensor, z_end: torch.Tensor, alpha_bar_t: torch.Tensor,
              alpha_bar_end: torch.Tensor) -> torch.Tensor:
    """x~, the x0 that makes one deterministic DDIM step from z_t land exactly on z_end (where the teacher's steps
    landed): x~ = (z_end - (sigma_end / sigma_t) z_t) / (alpha_end - (sigma_end / sigma_t) alpha_t).

    The denominator is never 0: the end has the higher SNR. sigma_t > 0 at every point a step starts from."""
    a_t, s_t = alpha_bar_t.sqrt(), (1 - alpha_bar_t).sqrt()
    a_end, s_end = alpha_bar_end.sqrt(), (1 - alpha_bar_end).sqrt()
    ratio = s_end / s_t
    return (z_end - ratio * z_t) / (a_end - ratio * a_t)


def truncated_snr_weight(alpha_bar: torch.Tensor) -> torch.Tensor:
    """max(SNR, 1), SNR = alpha_bar / (1 - alpha_bar): the x-space loss weight of Salimans & Ho ("truncated SNR"),
    1 at high noise (where x-space errors would otherwise weigh nothing) and the SNR at low noise."""
    return (alpha_bar / (1 - alpha_bar)).clamp_min(1.0)


def weighted_x_loss(x0: torch.Tensor, target: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of max(SNR, 1) * the mean squared error in x-space of each image."""
    per_image = ((x0.float() - target.float()) ** 2).flatten(1).mean(1)
    return (truncated_snr_weight(alpha_bar) * per_image).mean()


def at(values: torch.Tensor, positions: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[positions] per sample, shaped to broadcast against images `like`."""
    return per_sample(values[positions], like)
