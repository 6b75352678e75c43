"""A compact, configurable U-Net for epsilon prediction (or v or x0: `UNetConfig.prediction`).

The block structure follows diffusers' UNet2DModel (the network the original study trained), so that the paper
presets have the study's parameter counts and the speed benchmark compares like with like: ResNet blocks with
GroupNorm, SiLU and a projected sinusoidal time embedding; self-attention after the ResNet blocks of chosen levels
and in the middle; stride-2 convolutions down, nearest-neighbour + convolution up; skip connections from every
down-path output. tests/test_unet_diffusers_parity.py checks both paper presets output for output against
UNet2DModel with the study's configurations; diffusers_import.py converts its weights.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .parameterisation import check_prediction


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    channels: tuple[int, ...] = (64, 128, 256, 512)
    layers_per_block: int = 1
    attention_levels: tuple[int, ...] = (3,)  # indices into `channels`; level i works at resolution 32 / 2**i
    mid_attention: bool = True
    attention_head_dim: int = 8
    norm_groups: int = 32
    dropout: float = 0.0
    # What the output means: epsilon (the study's), v or x0 (see parameterisation.py). Not the architecture, but a
    # property of the trained weights that samplers and losses read; distilled few-step models use v.
    prediction: str = "epsilon"
    # Pixels per side of one input token: the network runs at 1/patch_size of the image's side on patch_size**2
    # times the channels (pixel unshuffle in, pixel shuffle out), so a 32 x 32 image costs what a 16 x 16 one does
    # at patch size 2 while every pixel stays the model's to draw.
    patch_size: int = 1

    def __post_init__(self):
        check_prediction(self.prediction)
        if self.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {self.patch_size}")
        if not self.channels or any(c <= 0 for c in self.channels):
            raise ValueError(f"channels must be positive, got {self.channels}")
        if self.layers_per_block < 1:
            raise ValueError("layers_per_block must be >= 1")
        for c in self.channels:
            if c % self.norm_groups:
                raise ValueError(f"channels {c} not divisible by norm_groups {self.norm_groups}")
        bad = [a for a in self.attention_levels if not 0 <= a < len(self.channels)]
        if bad:
            raise ValueError(f"attention levels {bad} outside 0..{len(self.channels) - 1}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["attention_levels"] = list(self.attention_levels)
        if self.prediction == "epsilon":
            # Left out at its default, so the configurations (and hashes) recorded before the field existed stay.
            del d["prediction"]
        if self.patch_size == 1:
            del d["patch_size"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        d["attention_levels"] = tuple(d["attention_levels"])
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, cosines first (diffusers' flip_sin_to_cos=True, freq_shift=0)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        # SiLU before the projection, as diffusers' ResnetBlock2D (and so the study's network) has it.
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.conv_shortcut(x) + h


class SelfAttention(nn.Module):
    """Spatial self-attention with a residual connection, through fused scaled_dot_product_attention."""

    def __init__(self, ch: int, head_dim: int, groups: int):
        super().__init__()
        self.heads = max(1, ch // head_dim)
        self.group_norm = nn.GroupNorm(groups, ch, eps=1e-5)
        self.to_q = nn.Linear(ch, ch)
        self.to_k = nn.Linear(ch, ch)
        self.to_v = nn.Linear(ch, ch)
        self.to_out = nn.Linear(ch, ch)

    def forward(self, x):
        b, c, h, w = x.shape
        seq = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # (b, hw, c)

        def split(t):
            return t.reshape(b, h * w, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(seq)), split(self.to_k(seq)), split(self.to_v(seq)))
        out = self.to_out(out.transpose(1, 2).reshape(b, h * w, c))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """The ResNet blocks (and attentions) of one resolution, on the down or the up path."""

    def __init__(self, in_chs: list[int], out_ch: int, temb_ch: int, cfg: UNetConfig, attention: bool,
                 resample: nn.Module | None):
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock(i, out_ch, temb_ch, cfg.norm_groups, cfg.dropout) for i in in_chs)
        self.attentions = nn.ModuleList(
            SelfAttention(out_ch, cfg.attention_head_dim, cfg.norm_groups) for _ in in_chs) if attention else None
        self.resample = resample


class UNet(nn.Module):
    """eps = UNet(x_t, t) for images of shape (B, C, H, W) with H, W divisible by patch_size * 2**(levels-1)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        chs = config.channels
        c0 = chs[0]
        temb_ch = 4 * c0
        self.temb_dim = c0
        self.time_embedding = nn.Sequential(nn.Linear(c0, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        token_channels = config.in_channels * config.patch_size ** 2
        self.conv_in = nn.Conv2d(token_channels, c0, 3, padding=1)
        attn = set(config.attention_levels)
        n = len(chs)

        skip_chs = [c0]
        self.down = nn.ModuleList()
        prev = c0
        for i, ch in enumerate(chs):
            ins = [prev] + [ch] * (config.layers_per_block - 1)
            final = i == n - 1
            self.down.append(Level(ins, ch, temb_ch, config, i in attn, None if final else Downsample(ch)))
            skip_chs += [ch] * config.layers_per_block + ([] if final else [ch])
            prev = ch

        self.mid_res1 = ResBlock(chs[-1], chs[-1], temb_ch, config.norm_groups, config.dropout)
        self.mid_attn = (SelfAttention(chs[-1], config.attention_head_dim, config.norm_groups)
                         if config.mid_attention else None)
        self.mid_res2 = ResBlock(chs[-1], chs[-1], temb_ch, config.norm_groups, config.dropout)

        self.up = nn.ModuleList()
        prev = chs[-1]
        for i, ch in reversed(list(enumerate(chs))):
            ins = []
            for _ in range(config.layers_per_block + 1):
                ins.append(prev + skip_chs.pop())
                prev = ch
            self.up.append(Level(ins, ch, temb_ch, config, i in attn, Upsample(ch) if i > 0 else None))

        self.norm_out = nn.GroupNorm(config.norm_groups, c0, eps=1e-5)
        self.conv_out = nn.Conv2d(c0, token_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        temb = self.time_embedding(timestep_embedding(t, self.temb_dim).to(x.dtype))
        patch = self.config.patch_size
        h = self.conv_in(F.pixel_unshuffle(x, patch) if patch > 1 else x)
        skips = [h]
        for level in self.down:
            for j, res in enumerate(level.resnets):
                h = res(h, temb)
                if level.attentions is not None:
                    h = level.attentions[j](h)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        h = self.mid_res1(h, temb)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid_res2(h, temb)
        for level in self.up:
            for j, res in enumerate(level.resnets):
                h = res(torch.cat([h, skips.pop()], dim=1), temb)
                if level.attentions is not None:
                    h = level.attentions[j](h)
            if level.resample is not None:
                h = level.resample(h)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, patch) if patch > 1 else out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


MODEL_PRESETS: dict[str, dict] = {
    # The study's networks (diffusers UNet2DModel configurations).
    "paper-fmnist": dict(in_channels=1, channels=(64, 128, 256, 512), layers_per_block=1, attention_levels=(3,)),
    "paper-cifar10": dict(in_channels=3, channels=(128, 256, 256, 256), layers_per_block=2, attention_levels=(1,)),
    # CPU-sized networks with the same layout (attention at the lowest resolution and in the middle).
    "small": dict(channels=(16, 32, 64, 64), layers_per_block=1, attention_levels=(3,), norm_groups=8),
    # `small` on 2 x 2 patches: 32 x 32 images at the cost of 16 x 16 ones (the cpu profile's CIFAR-10 network).
    "small-p2": dict(channels=(16, 32, 64, 64), layers_per_block=1, attention_levels=(3,), norm_groups=8,
                     patch_size=2),
    "tiny": dict(channels=(16, 32, 32), layers_per_block=1, attention_levels=(2,), norm_groups=8,
                 attention_head_dim=8),
}


def model_config(name: str, preset: dict, in_channels: int) -> UNetConfig:
    """The configuration of preset `name` for images with `in_channels` channels (paper presets fix their own)."""
    kw = dict(preset)
    fixed = kw.pop("in_channels", None)
    if fixed is not None and fixed != in_channels:
        raise ValueError(f"model preset {name!r} is for {fixed}-channel images, the stream has {in_channels}")
    return UNetConfig(in_channels=in_channels, **kw)
