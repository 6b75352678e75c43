"""`cldiff-bench run`: train a strategy task by task on a stream, evaluate after every task, write the result.

All randomness is keyed (seed, task, iteration, purpose), so a run resumed from a checkpoint draws exactly what
the uninterrupted run drew: data order, noise, timesteps, replay samples and evaluation samples.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import __version__
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .core import DiffusionCore, SpeedOptions, resolve_precision
from .cost import CostMeter, device_name
from .diffusion.seeding import derive_seeds, generator
from .diffusion.unet import count_parameters, model_config
from .errors import Interrupted, UserError
from .io import atomic_torch_save, atomic_write_json, check_writable_dir, load_tensors, read_json
from .paths import cache_dir as default_cache_dir
from .grids import save_grid
from .losslog import LOSS_LOG_NAME, TENSORBOARD_DIR, LossLog
from .model_source import fingerprint, weights_for
from .profiles import evaluation_settings, get_profile, resolve_budget
from .registry import Registry
from .results import build_result, metric_matrix, result_path
from .strategy import Batch
from .streams.base import to_model_range, to_uint8
from .streams.datasets import resolve_data_root

GRAD_CLIP = 1.0
PURPOSE_DATA_ORDER = 10
PURPOSE_GRID = 11
PURPOSE_FLIP = 12
PURPOSE_SCORE = 13
CONFIG_NAME = "config.json"


@dataclass
class RunConfig:
    strategy: str
    stream: str
    seed: int = 0
    profile: str = "small"
    device: str = "auto"
    precision: str | None = None         # None: the profile's (fp32 | bf16); never chosen by the machine
    channels_last: str = "inference"     # see core.SpeedOptions
    threads: int | None = None           # torch threads of this run (None: torch's default, one per core)
    compile: bool = False
    replay_ahead: int = 1
    out: Path = Path("runs")
    data_root: str | None = None
    cache_dir: str | None = None
    strategy_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    epochs: float | None = None
    iterations: int | None = None        # a fixed number of iterations per task instead of epochs
    batch_size: int | None = None
    learning_rate: float | None = None
    init_model: str | None = None        # start task 0 from these weights (see model_source.read_model)
    evaluation: dict[str, Any] = field(default_factory=dict)  # EvalSettings overrides
    evaluate: bool = True
    checkpoint_every: int = 0            # also checkpoint every N iterations inside a task (0: only after tasks)
    resume: bool = False
    force: bool = False
    progress: bool = True
    tensorboard: bool = False            # also log the losses as TensorBoard events (losses.csv is always written)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {requested} requested, but no CUDA GPU is available here (use --device cpu)")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu or cuda[:N], got {requested!r}")
    return torch.device(requested)


def _check_positive(name: str, value):
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise UserError(f"{name} must be positive (and finite), got {value}")


# Settings of how fast a run goes, not of what it computes (beyond rounding): a run may be resumed with others.
SPEED_KEYS = ("speed",)


def config_hash(resolved: dict) -> str:
    defining = {k: v for k, v in resolved.items() if k not in SPEED_KEYS}
    return hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16]


class Run:
    """One (strategy, stream, profile, seed) cell: set up, train task by task, evaluate, checkpoint, write."""

    def __init__(self, cfg: RunConfig, registry: Registry):
        for name in ("epochs", "iterations", "batch_size", "learning_rate"):
            _check_positive(f"--{name.replace('_', '-')}", getattr(cfg, name))
        if cfg.checkpoint_every < 0:
            raise UserError(f"--checkpoint-every must be >= 0, got {cfg.checkpoint_every}")
        self.cfg = cfg
        self.registry = registry
        self.spec = registry.stream(cfg.stream)
        self.strategy_cls = registry.strategy(cfg.strategy)
        profile = get_profile(cfg.profile)
        budget = resolve_budget(profile, self.spec)
        for key in ("model", "epochs", "batch_size", "iterations", "learning_rate"):
            if getattr(cfg, key) is not None:
                budget[key] = getattr(cfg, key)
        if cfg.epochs is not None and cfg.iterations is None:
            budget["iterations"] = None  # --epochs replaces the profile's fixed iteration count
        self.budget = budget
        self.profile = profile
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg.precision or profile.precision, self.device)
        # Flips the study applies to this data set's training images (CIFAR-10), at the profiles that follow it.
        self.hflip = bool(profile.study_augmentation and self.spec.study_hflip)
        self.speed = SpeedOptions(cfg.channels_last, cfg.compile, cfg.replay_ahead, cfg.threads)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cache_dir = check_writable_dir(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir(),
                                            "the cache directory")
        check_writable_dir(cfg.out, "--out")
        if cfg.data_root is not None and not Path(cfg.data_root).expanduser().is_dir():
            raise UserError(f"--data-root {cfg.data_root} does not exist")
        self.data_root = resolve_data_root(cfg.data_root)
        self.options = self.strategy_cls.resolve_options(cfg.stream, cfg.strategy_options)
        self.preset = registry.model_preset(budget["model"])
        self.eval_overrides = {**evaluation_settings(profile, self.spec), **cfg.evaluation}
        self.run_dir = Path(cfg.out) / cfg.stream / cfg.profile / cfg.strategy / f"seed{cfg.seed}"

    # --- setup ---------------------------------------------------------------------------------------------------
    def resolved_config(self, stream, unet_cfg) -> dict:
        return {
            "strategy": self.cfg.strategy, "strategy_options": self.options, "stream": self.cfg.stream,
            "seed": self.cfg.seed, "budget": self.budget,
            "model": {"preset": self.budget["model"], **unet_cfg.to_dict()},
            "precision": self.precision,
            "speed": self.speed.to_dict(),
            "optimizer": {"name": "adam", "lr": self.budget["learning_rate"], "reset_per_task": True,
                          "grad_clip": GRAD_CLIP},
            "diffusion": {**self.core.schedule.config, "prediction": "epsilon", "loss": "mse"},
            "augmentation": {"horizontal_flip": self.hflip},
            "study_seeds": list(self.profile.study_seeds) if self.profile.study_seeds else None,
            "init_model": fingerprint(self.cfg.init_model) if self.cfg.init_model else None,
            "evaluation": recorded_evaluation(self.eval_overrides) if self.cfg.evaluate else None,
            "class_order": list(stream.class_order),
        }

    def _prepare_run_dir(self, resolved: dict) -> bool:
        """Make the run directory ready; True when it already holds the finished result of this configuration."""
        cfg_file = self.run_dir / CONFIG_NAME
        digest = config_hash(resolved)
        self.config_digest = digest
        if cfg_file.is_file():
            existing = read_json(cfg_file)
            # Hashed again rather than trusted, so run directories written before the speed settings were left
            # out of the hash are still recognised.
            theirs = config_hash(existing.get("config") or {})
            same = theirs == digest
            if not same and not self.cfg.force:
                raise UserError(f"{self.run_dir} holds a run with another configuration "
                                f"({theirs} != {digest}); use another --out or --force")
            if self.cfg.force or not same:
                self._clear_run_dir()
            elif result_path(self.run_dir).is_file():
                return True
            elif (self.run_dir / CHECKPOINT_NAME).is_file() and not self.cfg.resume:
                raise UserError(f"{self.run_dir} holds an unfinished run of this configuration; continue it with "
                                f"--resume or start over with --force")
        elif self.run_dir.exists() and any(self.run_dir.iterdir()):
            if not self.cfg.force:
                raise UserError(f"{self.run_dir} is not empty and holds no cldiff-bench run; use --force")
            self._clear_run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg_file, {"config_hash": digest, "config": resolved})
        return False

    def _clear_run_dir(self) -> None:
        for name in (CHECKPOINT_NAME, "result.json", "samples", "models", LOSS_LOG_NAME, TENSORBOARD_DIR):
            path = self.run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    # --- main loop -----------------------------------------------------------------------------------------------
    def execute(self) -> Path:
        cfg = self.cfg
        say = tqdm.write  # --no-progress hides the bars only; these lines are what a sweep's logs keep
        started = time.time()
        stream = self.spec.build(self.data_root, cfg.seed, self.cache_dir)
        self.stream = stream
        unet_cfg = model_config(self.budget["model"], self.preset, stream.image_shape[0])
        self.meter = CostMeter(self.device)
        self.core = DiffusionCore(unet_cfg, stream.image_shape, self.device, self.meter, init_seed=cfg.seed,
                                  precision=self.precision, speed=self.speed)
        if cfg.init_model:
            # Read before anything is written, so a wrong file is refused at once; restored runs overwrite it.
            self.core.model.load_state_dict(weights_for(cfg.init_model, unet_cfg))
        self.strategy = self.strategy_cls(self.core, self.options)
        resolved = self.resolved_config(stream, unet_cfg)
        self.evaluator = self._make_evaluator() if cfg.evaluate else None
        if self._prepare_run_dir(resolved):
            print(f"{self.run_dir} already holds the result of this configuration; skipped (--force to redo)",
                  file=sys.stderr)
            return result_path(self.run_dir)
        if cfg.resume and (self.run_dir / CHECKPOINT_NAME).is_file():
            position = self._restore()
            say(f"resuming {self.run_dir} at task {position['task']}, iteration {position['iteration']}")
        else:
            position = {"task": 0, "iteration": 0, "optimizer": None}
            self.records: list[dict] = []
            self.previous_model_state = None
        self.loss_log = LossLog(self.run_dir, tensorboard=cfg.tensorboard)
        self.loss_log.open(position["task"], position["iteration"])
        try:
            return self._run_tasks(position, resolved, stream, started, say)
        finally:
            self.loss_log.close()

    def _run_tasks(self, position: dict, resolved: dict, stream, started: float, say) -> Path:
        cfg = self.cfg
        say(f"{cfg.strategy} on {cfg.stream} ({cfg.profile}), seed {cfg.seed}: {stream.num_tasks} tasks, "
            f"classes {[t.classes for t in stream.tasks]}, model {self.budget['model']} "
            f"({count_parameters(self.core.model) / 1e6:.2f}M parameters), device {device_name(self.device)}")

        for k in range(position["task"], stream.num_tasks):
            resume_at = position if k == position["task"] else {"iteration": 0, "optimizer": None}
            # A task resumed mid-way is charged from its original start (the snapshot travels in the checkpoint).
            before = resume_at.get("cost_at_task_start") or self.meter.snapshot()
            self._cost_at_task_start = before
            self.meter.reset_peak_memory()
            train_log = self._train_task(k, resume_at["iteration"], resume_at["optimizer"],
                                         resume_at.get("loss_sums"))
            # The model after each task is kept so `cldiff-bench evaluate` can score the run again later.
            atomic_torch_save(self.core.model.state_dict(), self.run_dir / task_model_path(k))
            # The student is sampled through one frozen copy: the layout and weight precision made for sampling.
            student = self.core.frozen_copy(role="student")
            metrics = self._evaluate(k, student)
            grid = self._save_grid(k, student)
            del student
            cost = CostMeter.difference(self.meter.snapshot(), before)
            cost.update(self.meter.peak_memory())
            self.records.append({"task": k, "classes": stream.tasks[k].classes, "train": train_log,
                                 "metrics": metrics, "cost": cost, "sample_grid": grid})
            if self.strategy.solver_mode == "replay":
                self.previous_model_state = {n: v.detach().cpu().clone()
                                             for n, v in self.core.model.state_dict().items()}
            self._checkpoint({"task": k + 1, "iteration": 0}, optimizer=None)
            shown = {"train_loss": train_log["mean_losses"].get("loss", float("nan")),
                     **{m: v for m, v in metrics.items() if isinstance(v, float)}}
            say(f"task {k} done: " + ", ".join(f"{m}={v:.4g}" for m, v in shown.items()))

        result = build_result(self, resolved, stream, wall_seconds=time.time() - started)
        path = result_path(self.run_dir)
        atomic_write_json(path, result)
        say(f"result written to {path}")
        return path

    def _task_iterations(self, n_images: int) -> tuple[int, int]:
        batch = self.budget["batch_size"]
        per_epoch = math.ceil(n_images / batch)
        if self.budget["iterations"]:
            return self.budget["iterations"], per_epoch
        return max(1, math.ceil(self.budget["epochs"] * per_epoch)), per_epoch

    def _train_task(self, k: int, start: int, optimizer_state, loss_sums: dict | None) -> dict:
        data = self.strategy.training_data(self.stream, k)
        total, per_epoch = self._task_iterations(len(data))
        batch_size = self.budget["batch_size"]
        model = self.core.model
        model.train()
        # Reset at every task, as the study does.
        optimizer = torch.optim.Adam(model.parameters(), lr=self.budget["learning_rate"])
        if start == 0:
            self.strategy.begin_task(k)
        elif optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state)
        sums: dict[str, float] = dict(loss_sums or {})
        perm_epoch, perm = -1, None
        bar = tqdm(range(start, total), desc=f"task {k}", unit="it", disable=not self.cfg.progress,
                   initial=start, total=total, dynamic_ncols=True, mininterval=1)
        stop = StopRequest()
        try:
            for it in bar:
                epoch, pos = divmod(it, per_epoch)
                if epoch != perm_epoch:
                    perm = torch.randperm(len(data), generator=generator(self.cfg.seed, k, epoch, PURPOSE_DATA_ORDER))
                    perm_epoch = epoch
                idx = perm[pos * batch_size:(pos + 1) * batch_size]
                x0 = to_model_range(data.images[idx])
                if self.hflip:
                    flip = torch.rand(len(idx), generator=generator(self.cfg.seed, k, it, PURPOSE_FLIP)) < 0.5
                    x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
                batch = Batch(x0=x0.to(self.device), labels=data.labels[idx],
                              task=k, iteration=it, seed=self.cfg.seed, iterations=total)
                with self.meter.phase("train"):
                    with self.core.autocast():
                        terms = self.strategy.batch_loss(batch)
                    if not torch.isfinite(terms.total):
                        raise UserError(f"the loss became {float(terms.total.detach())} at task {k}, iteration {it}; the "
                                        f"last good checkpoint is kept in {self.run_dir}")
                    optimizer.zero_grad(set_to_none=True)
                    terms.total.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                    optimizer.step()
                values = terms.as_floats()
                self.loss_log.write(k, it, values)
                for name, v in values.items():
                    sums[name] = sums.get(name, 0.0) + v
                if it % 20 == 0:
                    bar.set_postfix(loss=f"{values['loss']:.4f}")
                periodic = self.cfg.checkpoint_every and (it + 1) % self.cfg.checkpoint_every == 0
                if (periodic or stop.requested) and it + 1 < total:
                    self.loss_log.flush()
                    self._checkpoint({"task": k, "iteration": it + 1, "loss_sums": dict(sums),
                                      "cost_at_task_start": self._cost_at_task_start},
                                     optimizer=optimizer.state_dict())
                if stop.requested:
                    raise Interrupted(f"{stop.signal_name} at task {k}, iteration {it + 1}; checkpoint written to "
                                      f"{self.run_dir}, continue with --resume")
        finally:
            stop.restore()
            bar.close()
        self.strategy.end_task(k)
        self.loss_log.flush()
        return {"iterations": total, "epochs": total / per_epoch, "images": len(data), "batch_size": batch_size,
                "mean_losses": {n: v / total for n, v in sums.items()}}

    # --- evaluation ----------------------------------------------------------------------------------------------
    def _make_evaluator(self):
        from .evaluation import EvalSettings, Evaluator
        try:
            settings = EvalSettings(**self.eval_overrides)
        except TypeError as exc:
            raise UserError(f"bad evaluation setting: {exc}") from exc
        evaluator = Evaluator(self.stream, settings, self.cache_dir, self.device, self.cfg.seed, self.meter,
                              progress=self.cfg.progress, extractors=self.registry.extractors())
        evaluator.preflight()  # before any training: a missing weights file must not cost a task's work
        return evaluator

    def _generator_for(self, model):
        steps = self.eval_overrides["fid_steps"]
        return lambda seeds: self.core.generate(model, list(seeds), steps)

    def _evaluate(self, k: int, student) -> dict:
        if self.evaluator is None:
            return {}
        previous = None
        if self.strategy.solver_mode == "replay" and self.previous_model_state is not None:
            previous = self._generator_for(self.core.make_teacher(self.previous_model_state))
        return self.evaluator.after_task(k, self._generator_for(student), previous, self.strategy.solver_mode)

    def _save_grid(self, k: int, student) -> str:
        n = self.budget["grid_samples"]
        with self.meter.phase("evaluation"):
            # The same seeds after every task, so the grids show how the same samples change over the stream.
            images = to_uint8(self.core.generate(student, derive_seeds(n, self.cfg.seed, PURPOSE_GRID),
                                                 self.eval_overrides["fid_steps"])).cpu()
            captions = None
            if self.evaluator is not None:
                labels = self.evaluator.label(images)
                captions = [self.stream.class_names[c] for c in labels]
        rel = f"samples/task{k}.png"
        save_grid(images, self.run_dir / rel, captions)
        return rel

    # --- checkpoints ---------------------------------------------------------------------------------------------
    def _checkpoint(self, position: dict, optimizer) -> None:
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, {
            "suite_version": __version__, "config_hash": self.config_digest, "strategy": self.cfg.strategy,
            "model_preset": self.budget["model"], "position": position,
            "model": self.core.model.state_dict(), "optimizer": optimizer,
            "strategy_state": self.strategy.state_dict(),
            "evaluator": self.evaluator.state_dict() if self.evaluator is not None else None,
            "previous_model": self.previous_model_state, "meter": self.meter.state_dict(),
            "records_json": json.dumps(self.records),
        })

    def _restore(self) -> dict:
        state = load_checkpoint(self.run_dir / CHECKPOINT_NAME, expect={
            "suite_version": __version__, "config_hash": self.config_digest, "strategy": self.cfg.strategy,
            "model_preset": self.budget["model"]})
        self.core.model.load_state_dict(state["model"])
        self.strategy.load_state_dict(state["strategy_state"])
        if self.evaluator is not None and state["evaluator"] is not None:
            self.evaluator.load_state_dict(state["evaluator"])
        self.previous_model_state = state["previous_model"]
        self.meter.load_state_dict(state["meter"])
        self.records = json.loads(state["records_json"])
        return {**state["position"], "optimizer": state["optimizer"]}


def recorded_evaluation(settings: dict) -> dict:
    """Evaluation settings as recorded: a weights file by its name, so where it lies is not part of the identity."""
    return {k: Path(v).name if k.endswith("_weights") and v else v for k, v in settings.items()}


def task_model_path(k: int) -> str:
    return f"models/task{k}.pt"


def evaluate_run(run_dir: Path, evaluation: dict[str, Any], registry: Registry, output: Path | None = None,
                 progress: bool = True) -> Path:
    """Score a finished run again from its per-task models, e.g. with another FID extractor or more samples.

    Writes a result file with the run's training record and the new metrics (by default beside the original,
    named after the extractor); the original result is left as it is.
    """
    run_dir = Path(run_dir)
    original = read_json(result_path(run_dir))
    config = original["config"]
    budget = config["budget"]
    cfg = RunConfig(strategy=config["strategy"], stream=config["stream"], seed=config["seed"],
                    profile=budget["profile"], out=run_dir, strategy_options=config["strategy_options"],
                    model=budget["model"], epochs=budget["epochs"], iterations=budget["iterations"],
                    batch_size=budget["batch_size"], learning_rate=budget.get("learning_rate"),
                    precision=config.get("precision", "fp32"), **config.get("speed", {}),
                    evaluation={**(config.get("evaluation") or {}), **evaluation}, progress=progress)
    run = Run(cfg, registry)
    run.stream = stream = run.spec.build(run.data_root, cfg.seed, run.cache_dir)
    run.meter = CostMeter(run.device)
    unet_cfg = model_config(budget["model"], run.preset, stream.image_shape[0])
    run.core = DiffusionCore(unet_cfg, stream.image_shape, run.device, run.meter, precision=run.precision,
                             speed=run.speed)
    run.strategy = run.strategy_cls(run.core, run.options)
    run.evaluator = run._make_evaluator()
    run.previous_model_state = None
    records = json.loads(json.dumps(original["tasks"]))
    for k, record in enumerate(records):
        path = run_dir / task_model_path(k)
        if not path.is_file():
            raise UserError(f"{path} is missing: the run was made without per-task models and cannot be re-scored")
        state = load_tensors(path)
        before = run.meter.snapshot()
        record["metrics"] = run._evaluate(k, run.core.frozen_copy(state, role="student"))
        record["cost"]["seconds"]["evaluation"] = CostMeter.difference(run.meter.snapshot(), before)["seconds"][
            "evaluation"]
        if run.strategy.solver_mode == "replay":
            run.previous_model_state = state
    result = dict(original)
    result["tasks"] = records
    result["metrics"] = metric_matrix(records)
    result["evaluation"] = run.evaluator.describe()
    result["config"] = {**config, "evaluation": recorded_evaluation(run.eval_overrides)}
    output = output or run_dir / f"result-{run.eval_overrides.get('extractor', 'eval')}.json"
    atomic_write_json(output, result)
    return output


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


def run(cfg: RunConfig, registry: Registry) -> Path:
    return Run(cfg, registry).execute()
