"""How the diffusion core readies a U-Net for its role, the trained student or a frozen copy that samples: memory
format, weight precision and compiled forward, as the run's speed options and precision ask."""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .core import SpeedOptions


def prepare_for_role(model: nn.Module, training: bool, speed: SpeedOptions, precision: str,
                     compiled: CompiledForwards) -> None:
    """`model` in the memory format and weight precision of its role, its forward compiled if `speed` asks."""
    if speed.channels_last == "all" or (speed.channels_last == "inference" and not training):
        model.to(memory_format=torch.channels_last)
    if not training and precision == "bf16":
        # A frozen copy keeps its convolution and linear weights in bfloat16: autocast would round them to
        # exactly these values on every forward, so this computes the same and skips the casts (about 10% of
        # a sampling forward on a CPU). Norms keep float32 parameters, as autocast runs them in float32.
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.to(torch.bfloat16)
    if speed.compile:
        compiled.install(model, training)


class CompiledForwards:
    """The U-Net's compiled forward of each role (the student's training forward; every frozen copy's, teachers
    and metric samplers alike), compiled once and shared by every model of that role."""

    def __init__(self, device: torch.device):
        self.device = device
        self._by_role: dict[bool, object] = {}  # training or not -> the compiled forward

    def install(self, model: nn.Module, training: bool) -> None:
        """Run `model`'s forward through its role's compiled function. The weights are inputs of the compiled graph,
        so a new copy reuses it instead of compiling again, and the batch dimension is dynamic, so a smaller last
        batch does too. The module's own call stays eager, and with it the cost meter's hooks that count NFEs."""
        if training not in self._by_role:
            self._by_role[training] = torch.compile(type(model).forward,
                                                    mode="reduce-overhead" if self.device.type == "cuda" else None)
        compiled, owner = self._by_role[training], weakref.ref(model)  # weak: no cycle keeps a copy alive

        def forward(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            torch._dynamo.maybe_mark_dynamic(x, 0)
            if t.dim() > 0:
                torch._dynamo.maybe_mark_dynamic(t, 0)
            return compiled(owner(), x, t)

        model.forward = forward
