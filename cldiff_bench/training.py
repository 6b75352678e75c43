"""The SGD loop of one task: keyed data order and flips, the strategy's loss, Adam, periodic checkpoints, and a
clean stop on Ctrl-C or a scheduler's signal."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from tqdm import tqdm

from .core import DiffusionCore, host_to_device
from .diffusion.seeding import generator
from .errors import Interrupted, UserError
from .optimisation import DeferredLosses, optimisation_step
from .strategy import Batch, LossTerms, Strategy
from .threads import CoreSharingWatch
from .streams.base import to_model_range

if TYPE_CHECKING:
    from .context import RunContext

# Iterations between reads of the losses from the device: each read waits for the GPU to finish what is queued.
READ_EVERY = 50
LOSS_NAMES = ("loss", "data_loss", "replay_loss")
PURPOSE_DATA_ORDER = 10
PURPOSE_FLIP = 12

# checkpoint(iteration to continue at, loss sums so far, optimizer state)
Checkpoint = Callable[[int, dict, dict], None]


def train_task(context: RunContext, k: int, start: int, optimizer_state: dict | None, loss_sums: dict | None,
               checkpoint: Checkpoint, run_dir: Path) -> dict:
    """Train task k from iteration `start` (0, or where a checkpoint left off); the task's training record.

    Nothing in an iteration waits for the device: the losses stay there and are read every READ_EVERY iterations,
    at checkpoints, at a stop request and at the task's end, where they are logged, summed and checked.
    """
    settings, strategy, meter, loss_log = context.settings, context.strategy, context.meter, context.loss_log
    seed, budget, device = settings.seed, settings.budget, settings.device
    data = strategy.training_data(context.stream, k)
    total, per_epoch = budget.task_iterations(len(data))
    model = context.core.model
    model.train()
    # Reset at every task, as the study does.
    optimizer = torch.optim.Adam(model.parameters(), lr=budget.learning_rate)
    if start == 0:
        strategy.begin_task(k)
    elif optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    # The task's images travel to the device once, as uint8; every batch is gathered and converted there.
    images, labels = data.images.to(device), data.labels.to(device)
    sums: dict[str, float] = dict(loss_sums or {})
    perm_epoch, perm = -1, None
    bar = tqdm(range(start, total), desc=f"task {k}", unit="it", disable=not settings.progress,
               initial=start, total=total, dynamic_ncols=True, mininterval=1)
    stop = StopRequest()
    losses = LossWindow(k, start)
    sharing = CoreSharingCheck(start, device)
    try:
        for it in bar:
            sharing.at(it)
            epoch, pos = divmod(it, per_epoch)
            if epoch != perm_epoch:
                order = torch.randperm(len(data), generator=generator(seed, k, epoch, PURPOSE_DATA_ORDER))
                perm = host_to_device(order, device)
                perm_epoch = epoch
            idx = perm[pos * budget.batch_size:(pos + 1) * budget.batch_size]
            x0 = to_model_range(images[idx])
            if settings.hflip:
                flip = torch.rand(len(idx), generator=generator(seed, k, it, PURPOSE_FLIP)) < 0.5
                x0 = torch.where(host_to_device(flip, device)[:, None, None, None], x0.flip(-1), x0)
            batch = Batch(x0=x0, labels=labels[idx], task=k, iteration=it, seed=seed, iterations=total)
            with meter.phase("train"):
                if budget.lr_schedule != "constant":
                    for group in optimizer.param_groups:
                        group["lr"] = budget.learning_rate_at(it, total)
                losses.add(it, training_step(context.core, strategy, batch, optimizer))
            periodic = settings.checkpoint_every and (it + 1) % settings.checkpoint_every == 0
            stopping = stop.requested  # once: a signal arriving later must not checkpoint losses not yet read
            if periodic or stopping or (it + 1) % READ_EVERY == 0 or it + 1 == total:
                last = losses.read_into(loss_log, sums, run_dir)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if (periodic or stopping) and it + 1 < total:
                loss_log.flush()
                checkpoint(it + 1, dict(sums), optimizer.state_dict())
            if stopping:
                raise Interrupted(f"{stop.signal_name} at task {k}, iteration {it + 1}; checkpoint written to "
                                  f"{run_dir}, continue with --resume")
    finally:
        stop.restore()
        bar.close()
    strategy.end_task(k)
    loss_log.flush()
    return {"iterations": total, "epochs": total / per_epoch, "images": len(data), "batch_size": budget.batch_size,
            "mean_losses": {n: v / total for n, v in sums.items()}}


def training_step(core: DiffusionCore, strategy: Strategy, batch: Batch, optimizer: torch.optim.Optimizer) -> LossTerms:
    """One SGD step as the runner takes it: the strategy's loss under the core's autocast, then the optimisation
    step (clipping, the optimizer's step, the EMA of the weights). Reads nothing from the device (see LossWindow)."""
    with core.autocast():
        terms = strategy.batch_loss(batch)
    optimisation_step(terms.total, core.model, optimizer, core.ema)
    return terms


class CoreSharingCheck:
    """On the CPU with several threads, in the first task a process trains: measure iterations WARMUP..WARMUP+SPAN
    and print a hint when another process is taking the cores its threads wait on (see threads.py)."""

    WARMUP, SPAN = 3, 20
    measured = False  # once per process

    def __init__(self, start: int, device: torch.device):
        self.first = start + self.WARMUP
        self.watch = None
        self.active = device.type == "cpu" and torch.get_num_threads() > 1 and not CoreSharingCheck.measured

    def at(self, iteration: int) -> None:
        if not self.active:
            return
        if iteration == self.first:
            self.watch = CoreSharingWatch(torch.get_num_threads())
        elif iteration == self.first + self.SPAN and self.watch is not None:
            hint = self.watch.check(self.SPAN)
            if hint:
                tqdm.write(hint)
            self.active = False
            CoreSharingCheck.measured = True


class LossWindow:
    """The losses of a task's iterations since the last read, kept on the device (see DeferredLosses)."""

    def __init__(self, task: int, start: int):
        self.task = task
        self.start = start  # the first iteration of the window
        self._iterations: list[int] = []
        self._replay: list[bool] = []
        self._losses = DeferredLosses()

    def add(self, iteration: int, terms: LossTerms) -> None:
        replay = terms.replay if terms.replay is not None else torch.zeros_like(terms.data)
        self._losses.add(torch.stack([v.detach().float() for v in (terms.total, terms.data, replay)]))
        self._iterations.append(iteration)
        self._replay.append(terms.replay is not None)

    def read_into(self, loss_log, sums: dict[str, float], run_dir: Path) -> dict[str, float]:
        """Read the window's losses (one read), log one row per iteration and add them to `sums`; stop the run
        with the task and the window if a loss is not finite. Returns the last iteration's losses."""
        rows, bad = self._losses.read()
        end = self._iterations[-1] + 1
        values = {}
        for i, (it, replay, row) in enumerate(zip(self._iterations, self._replay, rows)):
            values = dict(zip(LOSS_NAMES, row if replay else row[:2]))
            loss_log.write(self.task, it, values)
            if i == bad:
                loss_log.flush()
                raise UserError(f"the loss became {values['loss']} at task {self.task} between iterations "
                                f"{self.start} and {end} (first at iteration {it}; losses are read from the device "
                                f"every {READ_EVERY} iterations); the last good checkpoint is kept in {run_dir}")
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + v
        self.start = end
        self._iterations, self._replay = [], []
        return values


class StopRequest:
    """Ctrl-C, or the signal a scheduler sends before it stops a job (SIGTERM; SIGUSR1/2 where a job asked for
    them), finishes the current iteration, writes a checkpoint and stops cleanly; a second Ctrl-C stops at once."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")
                    if hasattr(signal, name))

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._previous = {}
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the default behaviour
                break

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        tqdm.write(f"{self.signal_name}: finishing this iteration and writing a checkpoint (Ctrl-C again to abort)")

    def restore(self):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
