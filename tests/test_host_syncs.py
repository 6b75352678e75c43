"""The training loop reads values from the device rarely: every read of a loss makes the host wait for the GPU.

On a CPU nothing waits, but the reads are the same calls, so they can be counted here: scalar reads at the
dispatcher (what float(), .item() and `if tensor:` become) and .tolist() at the Python level (on a CPU tensor it
copies without going through the dispatcher).
"""
import csv
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from cldiff_bench.context import RunContext
from cldiff_bench.core import DiffusionCore
from cldiff_bench.cost import CostMeter
from cldiff_bench.registry import load_registry
from cldiff_bench.settings import RunConfig, resolve_settings
from cldiff_bench.training import READ_EVERY, train_task

from .helpers import MICRO_UNET

aten = torch.ops.aten
# The read itself: float(), .item() and `if tensor:` (aten.is_nonzero) all end in it, so each read counts once.
SCALAR_READ = aten._local_scalar_dense.default
ITERATIONS = 100


def _adams_step_counter() -> bool:
    """Adam reads its step count with .item(); the count is a CPU tensor on a GPU too (non-capturable Adam), so
    that read never waits for the device and is not counted."""
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "_get_value" and "torch/optim" in frame.f_code.co_filename.replace("\\", "/"):
            return True
        frame = frame.f_back
    return False


class ScalarReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is SCALAR_READ and not _adams_step_counter():
            self.count += 1
        return func(*args, **(kwargs or {}))


class ListReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.tolist, torch.Tensor.numpy):
            self.count += 1
        return func(*args, **(kwargs or {}))


def micro_context(strategy: str, tmp_path) -> RunContext:
    settings = resolve_settings(RunConfig(strategy=strategy, stream="digits-5", profile="tiny", device="cpu",
                                          budget={"iterations": ITERATIONS, "batch_size": 8}, evaluate=False, progress=False,
                                          out=tmp_path / "runs", cache_dir=str(tmp_path / "cache")),
                                load_registry())
    stream = settings.stream_spec.build(settings.data_root, settings.seed, settings.cache_dir)
    meter = CostMeter(settings.device)
    core = DiffusionCore(MICRO_UNET, stream.image_shape, settings.device, meter, init_seed=0)
    strategy = settings.strategy_cls(core, settings.strategy_options)
    context = RunContext(settings, stream, MICRO_UNET, meter, core, strategy, None)
    context.open_loss_log(tmp_path, 0, 0)
    return context


@pytest.mark.parametrize("strategy", ["naive", "gd"])
def test_training_reads_the_device_once_per_window_of_iterations(tmp_path, strategy):
    context = micro_context(strategy, tmp_path)
    task = 1  # gd has its teacher from task 1 on: its replay samples and targets are part of the iterations
    scalars, lists = ScalarReads(), ListReads()
    with scalars, lists:
        record = train_task(context, task, 0, None, None, lambda *args: None, tmp_path)
    context.loss_log.close()
    reads = scalars.count + lists.count
    # One read per window of READ_EVERY iterations (the last at the task's end), and one spare for the task's start.
    assert 1 <= reads <= ITERATIONS // READ_EVERY + 1, (scalars.count, lists.count)
    with (tmp_path / "losses.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["task"]), int(r["iteration"])) for r in rows] == [(task, i) for i in range(ITERATIONS)]
    mean = sum(float(r["loss"]) for r in rows) / ITERATIONS
    assert record["mean_losses"]["loss"] == pytest.approx(mean, rel=1e-5)  # the rows are the losses trained on
