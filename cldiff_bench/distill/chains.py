"""The data-free batch of a distillation: chains on the teacher's sampling path, each an image on its way from noise
to a sample.

At a round's start the chains are spread over the student's steps (chain b starts b mod S steps along the path), so
every update sees every noise level. An update moves them on by the round's stride, with the steps that made its
target; a chain that reaches the clean end starts again from fresh noise. The noise is keyed by (keys, round,
update, chain), so a resumed distillation draws what it would have.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..diffusion.seeding import derive_seed, per_sample_normal
from .base import Round

PURPOSE_CHAINS = 0xD157


class Chains:
    """The chains' images `z` and grid positions `pos` (on the CPU: read without a device sync); None between
    rounds and in a round that learns from images."""

    def __init__(self, keys: tuple[int, ...], image_shape: tuple[int, ...], device: torch.device):
        self.keys, self.image_shape, self.device = keys, image_shape, device
        self.z: torch.Tensor | None = None
        self.pos: torch.Tensor | None = None

    def noise(self, round_index: int, update_index: int, chains: list[int]) -> torch.Tensor:
        seeds = [derive_seed(*self.keys, PURPOSE_CHAINS, round_index, update_index, b) for b in chains]
        return per_sample_normal(seeds, self.image_shape, device=self.device)

    def spread(self, round_: Round, round_index: int, update_index: int, n: int,
               path_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        """`n` chains from fresh noise, each moved by `path_step(z, pos)` to where it starts."""
        phase = round_.stride * (torch.arange(n) % round_.student_steps)
        self.z = self.noise(round_index, update_index, list(range(n)))
        for s in range(int(phase.max())):
            moving = (phase > s).nonzero().squeeze(1)
            self.z[moving] = path_step(self.z[moving], torch.full((len(moving),), s))
        self.pos = phase

    def move_on(self, z_end: torch.Tensor, round_: Round, round_index: int, update_index: int) -> None:
        """The chains where an update's steps landed them (`z_end`); those at the clean end start again."""
        self.z, self.pos = z_end.detach(), self.pos + round_.stride
        ended = (self.pos >= round_.teacher_steps).nonzero().squeeze(1).tolist()
        if ended:
            self.z[ended] = self.noise(round_index, update_index, ended)
            self.pos[ended] = 0

    def clear(self) -> None:
        self.z = self.pos = None
