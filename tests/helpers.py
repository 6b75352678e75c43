"""Small pieces shared by the tests: a tiny diffusion core, batches on synthetic images, waiting for a run to train."""
from __future__ import annotations

import time

import torch

from cldiff_bench.checkpoint import CHECKPOINT_NAME
from cldiff_bench.core import DiffusionCore
from cldiff_bench.diffusion.unet import UNetConfig
from cldiff_bench.strategy import Batch

# Smaller than the `tiny` preset, still a real U-Net with attention: fast enough to run many strategy steps.
MICRO_UNET = UNetConfig(in_channels=1, channels=(8, 16), layers_per_block=1, attention_levels=(1,), norm_groups=4,
                        attention_head_dim=8)


def micro_core(seed: int = 0) -> DiffusionCore:
    return DiffusionCore(MICRO_UNET, (1, 32, 32), torch.device("cpu"), init_seed=seed)


def batch(task: int, iteration: int, n: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(1000 * task + iteration)
    x0 = torch.rand(n, 1, 32, 32, generator=g) * 2 - 1
    return Batch(x0=x0, labels=torch.zeros(n, dtype=torch.long), task=task, iteration=iteration, seed=seed)


class InputRecorder:
    """Records what a network was called with and what it returned (observation only, the call is unchanged)."""

    def __init__(self, module: torch.nn.Module):
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls.append((args[0].detach().clone(), args[1].detach().clone(), output.detach().clone()))

    def remove(self):
        self.handle.remove()


def wait_until_training(run_dir, timeout_s: float = 120) -> None:
    """Until task 0 has trained a few iterations (its first periodic checkpoint is written): a signal sent now lands
    inside the task however fast the machine is, with no sleep sized for a slow one."""
    deadline = time.time() + timeout_s
    while not (run_dir / CHECKPOINT_NAME).exists():
        assert time.time() < deadline, "the run wrote no checkpoint"
        time.sleep(0.02)


def one_line_error(capsys, code, *needles):
    """The command failed as bad input must: exit status 2, one line on stderr naming each needle, no traceback."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
