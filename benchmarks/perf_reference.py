"""The reference stack: diffusers' UNet2DModel and DDIMScheduler in float32 eager, written the way a diffusers
user (and the study's original code) writes them. Nothing here is tuned: it is the baseline the suite is compared to.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel

from cldiff_bench.diffusion.schedule import NoiseSchedule
from cldiff_bench.optimisation import GRAD_CLIP
from cldiff_bench.profiles import STUDY_LEARNING_RATE
from cldiff_bench.teacher import loss_weights
from perf_ours import strategy_options

# The study's networks, as diffusers configurations (our paper presets reproduce them block for block).
UNET_CONFIGS = {
    "fmnist": dict(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(64, 128, 256, 512),
                   layers_per_block=1, norm_num_groups=32,
                   down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                   up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D")),
    "cifar10": dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
                    layers_per_block=2, norm_num_groups=32,
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
}


def make_scheduler() -> DDIMScheduler:
    """The scheduler configured as our schedule and sampler: betas read from our NoiseSchedule so the two can
    never drift apart silently."""
    cfg = NoiseSchedule().config
    return DDIMScheduler(num_train_timesteps=cfg["num_timesteps"], beta_schedule="linear",
                         beta_start=cfg["beta_start"], beta_end=cfg["beta_end"], timestep_spacing="trailing",
                         rescale_betas_zero_snr=cfg["zero_terminal_snr"], clip_sample=True)


def make_unet(stream: str, device: torch.device, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**UNET_CONFIGS[stream]).to(device)


@torch.no_grad()
def ddim_sample(unet: UNet2DModel, n: int, steps: int, eta: float = 0.0) -> torch.Tensor:
    """The plain diffusers loop; the scheduler is rebuilt on every call, as the study's code does."""
    scheduler = make_scheduler()
    scheduler.set_timesteps(steps)
    cfg = unet.config
    x = torch.randn(n, cfg.in_channels, cfg.sample_size, cfg.sample_size, device=unet.device)
    for t in scheduler.timesteps:
        eps = unet(x, t).sample
        x = scheduler.step(eps, t, x, eta=eta).prev_sample
    return x


class Reference:
    """Student, frozen teacher and optimizer of one stream's network; each method is one unit of timed work."""

    def __init__(self, stream: str, device: torch.device, seed: int = 0):
        self.options = {name: strategy_options(stream, name) for name in ("gr", "gd")}
        self.unet = make_unet(stream, device, seed)
        self.unet.train()
        self.teacher = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.unet.parameters(), lr=STUDY_LEARNING_RATE)
        self.noise_scheduler = make_scheduler()
        self.num_timesteps = self.noise_scheduler.config.num_train_timesteps

    def _noised(self, x0: torch.Tensor):
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.num_timesteps, (x0.shape[0],), device=x0.device)
        return self.noise_scheduler.add_noise(x0, noise, t), t, noise

    def _update(self, loss: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), GRAD_CLIP)
        self.optimizer.step()
        return loss.item()

    def train_step(self, x0: torch.Tensor) -> float:
        x_t, t, noise = self._noised(x0)
        return self._update(F.mse_loss(self.unet(x_t, t).sample, noise))

    def generate(self, n: int, steps: int, eta: float = 0.0) -> torch.Tensor:
        return ddim_sample(self.teacher, n, steps, eta)

    def iteration(self, strategy: str, x0: torch.Tensor, task: int = 1) -> float:
        """One training iteration of naive, gr or gd during task `task`, with the registered strategy's options
        on this stream (teacher steps, eta, lambda)."""
        if strategy == "naive":
            return self.train_step(x0)
        opts = self.options[strategy]
        x_t, t, noise = self._noised(x0)
        x0_r = ddim_sample(self.teacher, x0.shape[0], opts["teacher_steps"], opts["teacher_eta"])
        x_r, t_r, noise_r = self._noised(x0_r)
        pred = self.unet(torch.cat([x_t, x_r]), torch.cat([t, t_r])).sample
        if strategy == "gd":
            with torch.no_grad():
                target_r = self.teacher(x_r, t_r).sample
        elif strategy == "gr":
            target_r = noise_r
        else:
            raise ValueError(strategy)
        n = x0.shape[0]
        w_data, w_replay = loss_weights(task, opts["lambda"])
        return self._update(w_data * F.mse_loss(pred[:n], noise) + w_replay * F.mse_loss(pred[n:], target_r))
