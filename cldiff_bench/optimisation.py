"""The optimisation step every trained network takes, in a continual-learning run and in a distillation alike:
backward, gradient-norm clipping, the optimizer's step and the exponential moving average of the weights; and the
losses kept on the device until they are read, all at once, and checked."""
from __future__ import annotations

import math

import torch
from torch import nn

GRAD_CLIP = 1.0  # the largest gradient norm an optimizer step takes (recorded in a run's configuration)


class WeightAverage:
    """An exponential moving average of a model's weights, kept in `weights` (a copy of the model). The decay warms
    up as (1 + n) / (10 + n) over the first updates, so the random initial weights are forgotten early."""

    def __init__(self, model: nn.Module, copy: nn.Module, decay: float):
        copy.load_state_dict(model.state_dict())
        self.weights = copy.eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(list(self.weights.parameters()), list(model.parameters()), 1.0 - decay)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"weights": self.weights.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.weights.load_state_dict(state["weights"])
        self.updates = int(state["updates"])


def optimisation_step(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
                      average: WeightAverage | None) -> None:
    """Backward from `loss`, the gradients of `model` clipped to a norm of GRAD_CLIP, the optimizer's step and one
    update of the average (if any). Reads nothing from the device."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    if average is not None:
        average.update(model)


class DeferredLosses:
    """The losses of the steps since the last read, kept on the device (detached) and read in one transfer: a
    float() and an isfinite check per step would each make the host wait for the GPU."""

    def __init__(self):
        self._pending: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, losses: torch.Tensor) -> None:
        """One step's loss, or a vector of its losses with the loss trained on first."""
        self._pending.append(losses.detach())

    def read(self) -> tuple[list, int | None]:
        """The losses added since the last read, one entry per step, and the index of the first step whose loss
        trained on is not finite (None when all are)."""
        values = torch.stack(self._pending).tolist()
        self._pending = []
        trained_on = (v[0] if isinstance(v, list) else v for v in values)
        return values, next((i for i, v in enumerate(trained_on) if not math.isfinite(v)), None)
