"""The noise schedule of the study: linear betas rescaled to zero terminal SNR (Lin et al., 2024)."""
from __future__ import annotations

import torch

NUM_TRAIN_TIMESTEPS = 1000


def linear_betas(num_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02):
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def rescale_to_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so that it ends at exactly 0 while keeping its first value."""
    sqrt_alpha_bar = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_alpha_bar[0].clone(), sqrt_alpha_bar[-1].clone()
    sqrt_alpha_bar = (sqrt_alpha_bar - last) * first / (first - last)
    alpha_bar = sqrt_alpha_bar**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


class NoiseSchedule:
    """alpha_bar and friends, computed once in float64 and kept on the model's device as float32.

    Use `.to(device)` once when the model moves; the sampler and the losses index these tensors directly so
    nothing is rebuilt per call.
    """

    def __init__(self, num_timesteps: int = NUM_TRAIN_TIMESTEPS, beta_start: float = 1e-4, beta_end: float = 0.02,
                 zero_terminal_snr: bool = True, device: torch.device | str = "cpu"):
        betas = linear_betas(num_timesteps, beta_start, beta_end)
        if zero_terminal_snr:
            betas = rescale_to_zero_terminal_snr(betas)
        alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        if zero_terminal_snr:
            alpha_bar[-1] = 0.0  # exact, not a rounding residue
        self.num_timesteps = num_timesteps
        self.config = {"num_timesteps": num_timesteps, "beta_start": beta_start, "beta_end": beta_end,
                       "zero_terminal_snr": zero_terminal_snr, "schedule": "linear"}
        self.betas = betas.float().to(device)
        self.alpha_bar = alpha_bar.float().to(device)
        self.sqrt_alpha_bar = alpha_bar.sqrt().float().to(device)
        self.sqrt_one_minus_alpha_bar = (1.0 - alpha_bar).sqrt().float().to(device)

    @property
    def device(self) -> torch.device:
        return self.alpha_bar.device

    def to(self, device) -> "NoiseSchedule":
        for name in ("betas", "alpha_bar", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0): sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, per sample."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return self.sqrt_alpha_bar[t].view(shape) * x0 + self.sqrt_one_minus_alpha_bar[t].view(shape) * noise
