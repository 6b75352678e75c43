"""The images a method that learns from data (`needs_data`, dsd-anchored) trains on in its self-taught rounds,
instead of chains: per update a batch of the anchor's images, noised at the round's student step starts. Images,
noise and positions are keyed by (keys, round, update), so a resumed distillation draws what it would have.

Where the images come from is the caller's: a task's training images (`cldiff-bench distill`'s default), or a pool
of the input model's own samples (`sample_pool`), which is what a continual learner has of its earlier tasks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

import torch

from ..diffusion.seeding import derive_seed, per_sample_normal
from .base import Round
from .objective import at

if TYPE_CHECKING:
    from torch import nn

    from ..core import DiffusionCore

PURPOSE_ANCHOR = 0xD158
PURPOSE_ANCHOR_POOL = 0xD159
POOL_CHUNK = 256  # images sampled per call while drawing a pool, so that a large pool fits a GPU's memory


class AnchorBatch(NamedTuple):
    x0: torch.Tensor   # the images
    eps: torch.Tensor  # the noise they were noised with
    z: torch.Tensor    # the noised images: the update's inputs
    pos: torch.Tensor  # their grid positions


class AnchorBatches:
    """`images(seeds)`: the anchor's images by seed, in [-1, 1]."""

    def __init__(self, images: Callable[[list[int]], torch.Tensor], keys: tuple[int, ...],
                 image_shape: tuple[int, ...], device: torch.device):
        self.images, self.keys, self.image_shape, self.device = images, keys, image_shape, device

    def draw(self, round_: Round, round_index: int, update_index: int, n: int,
             alpha_bar: torch.Tensor) -> AnchorBatch:
        """The batch of an update, noised by the round grid's `alpha_bar`."""
        key = (*self.keys, PURPOSE_ANCHOR, round_index, update_index)
        x0 = self.images([derive_seed(*key, 0, b) for b in range(n)]).to(self.device).float()
        eps = per_sample_normal([derive_seed(*key, 1, b) for b in range(n)], self.image_shape, device=self.device)
        generator = torch.Generator().manual_seed(derive_seed(*key, 2))
        pos = round_.stride * torch.randint(round_.student_steps, (n,), generator=generator)
        alpha_bar_at_pos = at(alpha_bar, pos, x0)
        return AnchorBatch(x0, eps, alpha_bar_at_pos.sqrt() * x0 + (1 - alpha_bar_at_pos).sqrt() * eps, pos)


def sample_pool(core: DiffusionCore, model: nn.Module, steps: int, n: int,
                keys: tuple[int, ...]) -> Callable[[list[int]], torch.Tensor]:
    """An anchor of `n` samples of `model` (deterministic DDIM, `steps` steps, image i keyed by (keys, i)), drawn
    now and looked up by seed: what a distillation can anchor to when it may not see a task's images. The draws
    are `model`'s forwards on the cost meter (n x steps)."""
    seeds = [derive_seed(*keys, PURPOSE_ANCHOR_POOL, i) for i in range(n)]
    pool = torch.cat([core.generate(model, seeds[i:i + POOL_CHUNK], steps) for i in range(0, n, POOL_CHUNK)])

    def images(image_seeds: list[int]) -> torch.Tensor:
        return pool[torch.tensor([s % n for s in image_seeds], device=pool.device)]
    return images
