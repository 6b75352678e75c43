"""Scoring without training: `cldiff-bench oracle` (the metrics' floor) and `cldiff-bench score` (one model).

The oracle scores real held-out images of the seen classes after every task exactly as a model's samples would be
(same extractor, sample count, classifier and real statistics).

The images are the evaluation classifier's held-out training images: never in the FID reference (the test set)
and never seen by the classifier that labels them, so the FID, KLD and ARD they get are what a perfect generator
would get, not zero. A leaderboard shows the result as its `real data` row.
"""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path

import torch

from . import __version__
from .core import DiffusionCore
from .cost import COUNTERS, PHASES, CostMeter, device_name
from .diffusion.seeding import derive_seeds, generator
from .diffusion.unet import model_config
from .errors import UserError
from .evaluation import EvalSettings, Evaluator
from .evaluation.classifier import holdout_split
from .evaluation.solver import generate_images
from .io import atomic_write_json, check_writable_dir
from .diffusion.samplers import get_sampler
from .model_source import checked_weights, fingerprint, model_sampling, read_model
from .output_dir import config_hash
from .paths import cache_dir as default_cache_dir
from .profiles import evaluation_settings, get_profile
from .registry import Registry
from .results import SCHEMA_VERSION, git_revision, metric_matrix, package_versions, result_path
from .settings import recorded_evaluation, resolve_device
from .streams.datasets import resolve_data_root

ORACLE_STRATEGY = "real-data"
_PURPOSE_ORACLE_SUBSET = 0xE301
PURPOSE_SCORE = 13  # distinct from a run's own purposes (training.py, context.py)


def oracle_images(held, seen: list[int], n: int, seed: int, k: int) -> torch.Tensor:
    """Up to n held-out images of the seen classes, a keyed random subset (in the classes' natural proportions)."""
    mask = torch.isin(held.labels, torch.tensor(seen))
    images = held.images[mask]
    if len(images) > n:
        images = images[torch.randperm(len(images), generator=generator(_PURPOSE_ORACLE_SUBSET, seed, k))[:n]]
    return images


def run_oracle(stream_name: str, profile_name: str, registry: Registry, out: Path, seed: int = 0,
               data_root: str | None = None, cache_dir: str | None = None, device: str = "auto",
               evaluation: dict | None = None, progress: bool = True) -> Path:
    spec = registry.stream(stream_name)
    profile = get_profile(profile_name, stream_name)
    device_ = resolve_device(device)
    cache = check_writable_dir(Path(cache_dir) if cache_dir else default_cache_dir(), "the cache directory")
    check_writable_dir(out, "--out")
    if data_root is not None and not Path(data_root).expanduser().is_dir():
        raise UserError(f"--data-root {data_root} does not exist")
    overrides = {**evaluation_settings(profile, spec), **(evaluation or {})}
    try:
        settings = EvalSettings(**{**overrides, "compute_accuracy": False})
    except TypeError as exc:
        raise UserError(f"bad evaluation setting: {exc}") from exc
    started = time.time()
    stream = spec.build(resolve_data_root(data_root), seed, cache).at_size(profile.image_size)
    evaluator = Evaluator(stream, settings, cache, device_, seed, progress=progress, extractors=registry.extractors())
    evaluator.preflight()
    _, held = holdout_split(stream, settings.classifier_holdout)
    if not len(held):
        raise UserError("the oracle needs held-out images: classifier_holdout is 0")
    tasks = []
    for k in range(stream.num_tasks):
        begun = time.perf_counter()
        images = oracle_images(held, stream.seen_classes(k), settings.num_generated, seed, k)
        metrics = {"task": k, "seen_classes": list(stream.seen_classes(k)), **evaluator.score_images(k, images)}
        seconds = time.perf_counter() - begun
        tasks.append({"task": k, "classes": stream.tasks[k].classes, "metrics": metrics,
                      "cost": {"counts": {c: 0 for c in COUNTERS},
                               "seconds": {p: (seconds if p == "evaluation" else 0.0) for p in PHASES}}})
    config = {"strategy": ORACLE_STRATEGY, "kind": "oracle", "stream": stream_name, "seed": seed,
              "budget": {"profile": profile_name, "image_size": profile.image_size}, "model": None, "precision": None,
              "evaluation": recorded_evaluation({**overrides, "compute_accuracy": False}),
              "class_order": list(stream.class_order)}
    doc = {"schema_version": SCHEMA_VERSION, "kind": "oracle",
           "suite": {"name": "cldiff-bench", "version": __version__, "git": git_revision()},
           "packages": package_versions(), "device": device_name(device_),
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "config": config, "config_hash": config_hash(config), "stream": stream.describe(),
           "evaluation": evaluator.describe(), "tasks": tasks, "metrics": metric_matrix(tasks),
           "cost": {"counts": {c: 0 for c in COUNTERS},
                    "seconds": {p: sum(t["cost"]["seconds"][p] for t in tasks) for p in PHASES}},
           "wall_seconds": time.time() - started}
    path = result_path(Path(out) / stream_name / profile_name / ORACLE_STRATEGY / f"seed{seed}")
    atomic_write_json(path, doc)
    return path


def score_model(model_path: str, stream_name: str, task: int, profile_name: str, registry: Registry, seed: int = 0,
                preset: str | None = None, data_root: str | None = None, cache_dir: str | None = None,
                device: str = "auto", evaluation: dict | None = None, progress: bool = True,
                image_size: int | None = None, sampler: str | None = None) -> dict:
    """FID, KLD and ARD of one model's samples, against the classes seen after `task` of the seed's class order
    (e.g. a diffusers UNet2DModel the study's code trained, or a run's models/taskK.pt); at `image_size`, or the
    profile's. Drawn with the model's prediction type, with the registered `sampler` (default: evaluation's sampler,
    else the one its file names, else DDIM) and at the steps its file names (a distilled model's) unless
    evaluation's fid_steps says otherwise."""
    spec = registry.stream(stream_name)
    profile = get_profile(profile_name, stream_name)
    device_ = resolve_device(device)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    sampling = model_sampling(model_path)
    evaluation = dict(evaluation or {})
    evaluation["sampler"] = sampler or evaluation.get("sampler") or sampling["sampler"]
    get_sampler(evaluation["sampler"], registry.samplers())  # an unknown name is refused before any work
    if sampling["steps"] is not None:
        evaluation.setdefault("fid_steps", sampling["steps"])
    settings = EvalSettings(**{**evaluation_settings(profile, spec), **evaluation, "compute_accuracy": False})
    stream = spec.build(resolve_data_root(data_root), seed, cache).at_size(image_size or profile.image_size)
    if not 0 <= task < stream.num_tasks:
        raise UserError(f"--task must be in 0..{stream.num_tasks - 1}, got {task}")
    file_config, state = read_model(model_path)
    config = file_config
    if config is None:
        name = preset or profile.model or spec.paper_model
        config = model_config(name, registry.model_preset(name), stream.image_shape[0])
    meter = CostMeter(device_)
    core = DiffusionCore(config, stream.image_shape, device_, meter, precision=profile.precision,
                         samplers=registry.samplers())
    evaluator = Evaluator(stream, settings, cache, device_, seed, meter, progress=progress,
                          extractors=registry.extractors())
    evaluator.preflight()
    frozen = core.frozen_copy(checked_weights(model_path, file_config, state, config), role="student")
    seeds = derive_seeds(settings.num_generated, seed, task, PURPOSE_SCORE)
    images = generate_images(lambda chunk: core.generate(frozen, list(chunk), settings.fid_steps,
                                                         sampler=settings.sampler),
                             seeds, settings.batch_size, stream.image_shape, progress, "samples")
    return {"model": fingerprint(model_path), "stream": stream_name, "task": task, "seed": seed,
            "profile": profile_name, "unet": config.to_dict(),
            "sampling": {"sampler": settings.sampler, "steps": settings.fid_steps, "prediction": config.prediction},
            "metrics": evaluator.score_images(task, images), "evaluation": evaluator.describe()}
