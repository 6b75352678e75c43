"""`cldiff-bench run`: train a strategy task by task on a stream, evaluate after every task, write the result.

All randomness is keyed (seed, task, iteration, purpose), so a run resumed from a checkpoint draws exactly what
the uninterrupted run drew: data order, noise, timesteps, replay samples and evaluation samples.

The pieces: `settings` resolves and checks what the run was asked for, `context` builds what it trains and scores
with, `rundir` keeps its directory, `training` is one task's SGD loop; `Run` here is the loop over the tasks.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .context import RunContext
from .cost import CostMeter, device_name
from .diffusion.unet import count_parameters
from .errors import UserError
from .io import atomic_write_json, read_json
from .profiles import get_profile
from .start_line import start_line
from .registry import Registry
from .results import build_result, metric_matrix, result_path
from .runlock import RunLock, lock_holder, lock_path, describe_holder, held_for_us
from .rundir import RunDir
from .settings import RunConfig, RunSettings, resolve_device, resolve_settings  # noqa: F401 (the CLI's imports)
from .training import train_task

say = tqdm.write  # --no-progress hides the bars only; these lines are what a sweep's logs keep


class Run:
    """One (strategy, stream, profile, seed) cell: train task by task, evaluate, checkpoint, write the result."""

    def __init__(self, settings: RunSettings, registry: Registry):
        self.settings = settings
        self.registry = registry
        self.dir = RunDir(settings.run_dir)
        self.records: list[dict] = []

    def execute(self) -> Path:
        started = time.time()
        # Everything the run needs is checked (and built) before it locks its directory: a refused run writes
        # nothing.
        context = RunContext.build(self.settings, self.registry)
        with locked(self.dir.path):
            return self._execute(context, started)

    def _execute(self, context: RunContext, started: float) -> Path:
        s = self.settings
        resolved = context.resolved_config()
        if self.dir.prepare(resolved, force=s.force, resume=s.resume):
            print(f"{self.dir.path} already holds the result of this configuration; skipped (--force to redo)",
                  file=sys.stderr)
            return self.dir.result_path
        position = {"task": 0, "iteration": 0, "optimizer": None}
        if s.resume and self.dir.checkpoint_path.is_file():
            position, self.records = self.dir.restore(context)
            # A result's wall time is the run's, not its last process's: the time taken before the stop counts
            # (a checkpoint from before this was recorded: the time its cost meter had clocked by phase).
            started -= position.get("wall_seconds", sum(context.meter.seconds.values()))
            say(f"resuming {self.dir.path} at task {position['task']}, iteration {position['iteration']}")
        loss_log = context.open_loss_log(self.dir.path, position["task"], position["iteration"])
        try:
            return self._run_tasks(context, position, resolved, started)
        finally:
            loss_log.close()

    def _run_tasks(self, context: RunContext, position: dict, resolved: dict, started: float) -> Path:
        s, stream, meter = self.settings, context.stream, context.meter
        say(f"{s.strategy} on {s.stream} ({s.budget.profile}), seed {s.seed}: {stream.num_tasks} tasks, "
            f"classes {[t.classes for t in stream.tasks]}, model {s.budget.model} "
            f"({count_parameters(context.core.model) / 1e6:.2f}M parameters), device {device_name(s.device)}")
        say(start_line(s, context, position["task"]))
        note = get_profile(s.budget.profile, s.stream).start_note
        if note:
            say(f"note: {note}")
        for k in range(position["task"], stream.num_tasks):
            resume_at = position if k == position["task"] else {"iteration": 0, "optimizer": None}
            # A task resumed mid-way is charged from its original start (the snapshot travels in the checkpoint).
            before = resume_at.get("cost_at_task_start") or meter.snapshot()
            meter.reset_peak_memory()

            def checkpoint(iteration: int, loss_sums: dict, optimizer: dict, k=k, before=before) -> None:
                self.dir.save_checkpoint(context, {"task": k, "iteration": iteration, "loss_sums": loss_sums,
                                                   "cost_at_task_start": before,
                                                   "wall_seconds": time.time() - started}, optimizer, self.records)

            train_log = train_task(context, k, resume_at["iteration"], resume_at["optimizer"],
                                   resume_at.get("loss_sums"), checkpoint, self.dir.path)
            metrics, grid = self._score_task(context, k)
            cost = CostMeter.difference(meter.snapshot(), before)
            cost.update(meter.peak_memory())
            self.records.append({"task": k, "classes": stream.tasks[k].classes, "train": train_log,
                                 "metrics": metrics, "cost": cost, "sample_grid": grid})
            self.dir.save_checkpoint(context, {"task": k + 1, "iteration": 0, "wall_seconds": time.time() - started},
                                     None, self.records)
            shown = {"train_loss": train_log["mean_losses"].get("loss", float("nan")),
                     **{m: v for m, v in metrics.items() if isinstance(v, float)}}
            say(f"task {k} done: " + ", ".join(f"{m}={v:.4g}" for m, v in shown.items()))

        evaluation = context.evaluator.describe() if context.evaluator is not None else None
        result = build_result(self.records, resolved, self.dir.config_digest, stream, s.device, evaluation,
                              wall_seconds=time.time() - started)
        path = self.dir.write_result(result)
        say(f"result written to {path}")
        return path

    def _score_task(self, context: RunContext, k: int) -> tuple[dict, str]:
        """Keep the model after task k, evaluate it and draw its sample grid: (metrics, the grid's path)."""
        state = context.core.sampling_state_dict()
        # The model after each task is kept so `cldiff-bench evaluate` can score the run again later.
        self.dir.save_task_model(k, state)
        # The student is sampled through one frozen copy: the layout and weight precision made for sampling.
        student = context.core.frozen_copy(role="student")
        metrics = context.evaluate(k, student, state)
        grid = self.dir.save_sample_sheet(k, *context.grid_samples(student))
        return metrics, grid


@contextlib.contextmanager
def locked(run_dir: Path):
    """Hold the run directory's lock for the run (see runlock.py), unless a sweep's cell already holds it for us;
    refuse a directory another live process trains in."""
    if held_for_us(lock_path(run_dir)):
        yield
        return
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": shlex.join(["cldiff-bench", *sys.argv[1:]]),
              "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    lock = RunLock(lock_path(run_dir))
    if not lock.acquire(holder):
        raise UserError(f"{run_dir} is in use by another run ({describe_holder(lock_holder(lock.path))}); wait "
                        f"for it to end or stop it")
    try:
        yield
    finally:
        lock.release()


def run(cfg: RunConfig, registry: Registry) -> Path:
    return Run(resolve_settings(cfg, registry), registry).execute()


def evaluate_run(run_dir: Path, evaluation: dict[str, Any], registry: Registry, output: Path | None = None,
                 progress: bool = True) -> Path:
    """Score a finished run again from its per-task models, e.g. with another FID extractor or more samples.

    Writes a result file with the run's training record and the new metrics (by default beside the original,
    named after the extractor); the original result is left as it is.
    """
    run_dir = RunDir(run_dir)
    original = read_json(result_path(run_dir.path))
    config = original["config"]
    budget = config["budget"]
    cfg = RunConfig(strategy=config["strategy"], stream=config["stream"], seed=config["seed"],
                    profile=budget["profile"], out=run_dir.path, strategy_options=config["strategy_options"],
                    budget={k: v for k, v in budget.items() if k != "profile"},
                    precision=config.get("precision", "fp32"), **config.get("speed", {}),
                    evaluation={**(config.get("evaluation") or {}), **evaluation}, progress=progress)
    settings = resolve_settings(cfg, registry)
    context = RunContext.build(settings, registry)
    records = json.loads(json.dumps(original["tasks"]))
    for k, record in enumerate(records):
        state = run_dir.load_task_model(k)
        before = context.meter.snapshot()
        record["metrics"] = context.evaluate(k, context.core.frozen_copy(state, role="student"), state)
        record["cost"]["seconds"]["evaluation"] = CostMeter.difference(context.meter.snapshot(), before)[
            "seconds"]["evaluation"]
    result = dict(original)
    result["tasks"] = records
    result["metrics"] = metric_matrix(records)
    result["evaluation"] = context.evaluator.describe()
    result["config"] = {**config, "evaluation": context.recorded_evaluation()}
    output = output or run_dir.path / f"result-{settings.eval_settings.extractor}.json"
    atomic_write_json(output, result)
    return output
