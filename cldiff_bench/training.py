"""The SGD loop of one task: keyed data order and flips, the strategy's loss, Adam, periodic checkpoints, and a
clean stop on Ctrl-C or a scheduler's signal."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
from tqdm import tqdm

from .diffusion.seeding import generator
from .errors import Interrupted, UserError
from .strategy import Batch
from .streams.base import to_model_range

if TYPE_CHECKING:
    from .context import RunContext

GRAD_CLIP = 1.0
PURPOSE_DATA_ORDER = 10
PURPOSE_FLIP = 12

# checkpoint(iteration to continue at, loss sums so far, optimizer state)
Checkpoint = Callable[[int, dict, dict], None]


def train_task(context: RunContext, k: int, start: int, optimizer_state: dict | None, loss_sums: dict | None,
               checkpoint: Checkpoint, run_dir: Path) -> dict:
    """Train task k from iteration `start` (0, or where a checkpoint left off); the task's training record."""
    settings, strategy, meter, loss_log = context.settings, context.strategy, context.meter, context.loss_log
    seed, budget = settings.seed, settings.budget
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
    sums: dict[str, float] = dict(loss_sums or {})
    perm_epoch, perm = -1, None
    bar = tqdm(range(start, total), desc=f"task {k}", unit="it", disable=not settings.progress,
               initial=start, total=total, dynamic_ncols=True, mininterval=1)
    stop = StopRequest()
    try:
        for it in bar:
            epoch, pos = divmod(it, per_epoch)
            if epoch != perm_epoch:
                perm = torch.randperm(len(data), generator=generator(seed, k, epoch, PURPOSE_DATA_ORDER))
                perm_epoch = epoch
            idx = perm[pos * budget.batch_size:(pos + 1) * budget.batch_size]
            x0 = to_model_range(data.images[idx])
            if settings.hflip:
                flip = torch.rand(len(idx), generator=generator(seed, k, it, PURPOSE_FLIP)) < 0.5
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            batch = Batch(x0=x0.to(settings.device), labels=data.labels[idx].to(settings.device),
                          task=k, iteration=it, seed=seed, iterations=total)
            with meter.phase("train"):
                if budget.lr_schedule != "constant":
                    for group in optimizer.param_groups:
                        group["lr"] = budget.learning_rate_at(it, total)
                with context.core.autocast():
                    terms = strategy.batch_loss(batch)
                if not torch.isfinite(terms.total):
                    raise UserError(f"the loss became {float(terms.total.detach())} at task {k}, iteration {it}; the "
                                    f"last good checkpoint is kept in {run_dir}")
                optimizer.zero_grad(set_to_none=True)
                terms.total.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                optimizer.step()
                context.core.update_ema()
            values = terms.as_floats()
            loss_log.write(k, it, values)
            for name, v in values.items():
                sums[name] = sums.get(name, 0.0) + v
            if it % 20 == 0:
                bar.set_postfix(loss=f"{values['loss']:.4f}")
            periodic = settings.checkpoint_every and (it + 1) % settings.checkpoint_every == 0
            if (periodic or stop.requested) and it + 1 < total:
                loss_log.flush()
                checkpoint(it + 1, dict(sums), optimizer.state_dict())
            if stop.requested:
                raise Interrupted(f"{stop.signal_name} at task {k}, iteration {it + 1}; checkpoint written to "
                                  f"{run_dir}, continue with --resume")
    finally:
        stop.restore()
        bar.close()
    strategy.end_task(k)
    loss_log.flush()
    return {"iterations": total, "epochs": total / per_epoch, "images": len(data), "batch_size": budget.batch_size,
            "mean_losses": {n: v / total for n, v in sums.items()}}


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
