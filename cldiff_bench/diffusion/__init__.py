"""The one shared diffusion core: U-Net, noise schedule, DDIM sampler and the training loss."""
from .ddim import DDIMSampler, trailing_timesteps
from .schedule import NoiseSchedule
from .unet import MODEL_PRESETS, UNet, UNetConfig, count_parameters, model_config

__all__ = ["DDIMSampler", "trailing_timesteps", "NoiseSchedule", "MODEL_PRESETS", "UNet", "UNetConfig",
           "count_parameters", "model_config"]
