"""A distillation round's optimisation: a fresh Adam every round (as in Salimans & Ho) at the learning rate the
options give each update (constant, or warm-up then cosine within the round), the EMA whose weights the round hands
on, and the sum of the round's losses.
"""
from __future__ import annotations

import torch
from torch import nn

from ..diffusion.unet import UNet, UNetConfig
from ..errors import UserError
from ..optimisation import DeferredLosses, WeightAverage
from .base import DistillOptions, Round


def round_optimizer(model: nn.Module, options: DistillOptions, round_: Round) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=options.learning_rate_at(round_, 0),
                            weight_decay=options.weight_decay)


def schedule_learning_rate(optimizer: torch.optim.Optimizer, options: DistillOptions, round_: Round,
                           update: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = options.learning_rate_at(round_, update)


def round_average(model: nn.Module, config: UNetConfig, device: torch.device,
                  decay: float | None) -> WeightAverage | None:
    """The EMA of `model`'s weights, in a U-Net of `config`; None without a decay (the trained weights are handed
    on)."""
    if decay is None:
        return None
    return WeightAverage(model, UNet(config).to(device), decay)


class RoundLosses:
    """A round's losses: kept on the device, added to `total` a window at a time; a loss that is not finite stops."""

    def __init__(self, total: float = 0.0):
        self.total = total
        self._pending = DeferredLosses()

    def add(self, loss: torch.Tensor) -> None:
        self._pending.add(loss)

    def read(self, round_index: int, update_index: int) -> None:
        """Read the losses kept since the last read (one transfer), those of the updates before `update_index`."""
        if not self._pending:
            return
        first = update_index - len(self._pending)
        values, bad = self._pending.read()
        if bad is not None:
            raise UserError(f"the distillation loss became {values[bad]} in round {round_index} at update "
                            f"{first + bad}; try a lower --learning-rate")
        for v in values:  # one at a time: the same sum whatever the windows read (a resumed run reads others)
            self.total += v
