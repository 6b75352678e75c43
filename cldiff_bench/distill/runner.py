"""`cldiff-bench distill`: a saved model distilled into a few-step student, scored against plain DDIM.

The output directory holds config.json (the request; its hash is the directory's identity, as a run's), the model
after every round (models/stepsN.pt, sampled with N steps), model.pt (the target's), checkpoint.pt while it runs and
distill.json: the rounds, the cost (updates, network evaluations by the cost meter, time) and, unless --no-eval,
FID, KLD and ARD of the distilled models at 1, 2, 4 and 8 steps beside the input model's with plain DDIM at the same
steps. The scores are `cldiff-bench score`'s: the same sample seeds, so `score models/steps4.pt --steps 4` repeats
the distilled 4-step figure.
"""
from __future__ import annotations

import datetime as _dt
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .. import __version__
from ..core import DiffusionCore
from ..cost import CostMeter, device_name
from ..diffusion.samplers import DEFAULT_SAMPLER
from ..diffusion.seeding import derive_seeds
from ..diffusion.unet import UNetConfig, model_config
from ..errors import UserError
from ..io import atomic_write_bytes, atomic_write_json, check_writable_dir
from ..model_source import checked_weights, fingerprint, read_model, save_model_file
from ..output_dir import OutputDir
from ..paths import cache_dir as default_cache_dir
from ..profiles import DEFAULT_PROFILE, Profile, evaluation_settings, get_profile
from ..registry import Registry
from ..registry.specs import StreamSpec
from ..results import git_revision, package_versions
from ..scoring import PURPOSE_SCORE
from ..settings import recorded_evaluation, resolve_device
from ..streams.base import Stream, to_model_range
from ..streams.datasets import resolve_data_root
from ..training import StopRequest
from .anchor import sample_pool
from .base import DistillMethod, DistillOptions, Round, plan_rounds
from .engine import Distillation
from .objective import student_config

MODEL_NAME = "model.pt"
EVAL_STEPS = (1, 2, 4, 8)
PURPOSE_DISTILL = 0xD157  # keys the chains' noise (with the seed)
# The anchor's settings and their flags: only for a method that learns from images.
ANCHOR_FLAGS = {"anchor_source": "--anchor", "anchor_images": "--anchor-images", "anchor_weight": "--anchor-weight"}
DATA = ("data-free: the teacher's deterministic DDIM sampling path from keyed noise, chains spread over the "
        "student's steps (distill/engine.py)")

say = tqdm.write


@dataclass
class DistillRequest:
    model: str
    method: str
    stream: str
    task: int
    out: Path
    seed: int = 0
    profile: str = DEFAULT_PROFILE
    model_preset: str | None = None
    target_steps: int = 1
    from_steps: int = 64
    updates: int = 200
    batch_size: int = 64
    learning_rate: float = 1e-4
    ema_decay: float | None = 0.995  # 0 or None: hand on the trained weights themselves
    convert_updates: int | None = None  # a conversion round of its own (DistillOptions)
    convert_learning_rate: float | None = None
    # DistillOptions' round optimisation and anchor (lr_schedule, warmup_fraction, final_learning_rate,
    # weight_decay, anchor_weight, anchor_source, anchor_images): only those given, so the rest keep the options'
    # defaults.
    regime: dict = field(default_factory=dict)
    eval_steps: tuple[int, ...] = EVAL_STEPS
    evaluate: bool = True
    evaluation: dict = field(default_factory=dict)  # EvalSettings overrides (--num-generated, --extractor ...)
    data_root: str | None = None
    cache_dir: str | None = None
    device: str = "auto"
    threads: int | None = None
    checkpoint_every: int = 50
    resume: bool = False
    force: bool = False
    progress: bool = True


def task_images(stream, task: int):
    """Images of the task's training set by seed, in the model's range [-1, 1]: a data-anchored method's anchor."""
    images = stream.tasks[task].train.images

    def anchor(seeds: list[int]) -> torch.Tensor:
        return to_model_range(images[torch.tensor([s % len(images) for s in seeds])])
    return anchor


def round_model_path(steps: int) -> str:
    return f"models/steps{steps}.pt"


class DistillDir(OutputDir):
    """`distill`'s output directory: only its own configuration continues in it, as in a run's."""

    RESULT_NAME = "distill.json"
    OUTPUTS = (MODEL_NAME, "models")
    OTHER_CONFIGURATION = "a distillation of another configuration"
    UNFINISHED = "an unfinished distillation of this configuration"
    NOTHING = "no distillation"


@dataclass
class DistillPlan:
    """A request resolved and checked, before anything is written."""
    method: type[DistillMethod]
    options: DistillOptions
    rounds: list[Round]
    profile: Profile
    device: torch.device
    cache: Path
    stream: Stream
    teacher_config: UNetConfig
    teacher_state: dict
    evaluation: dict  # the EvalSettings
    anchor: Callable[[list[int]], torch.Tensor] | None
    recorded: dict = field(init=False)  # the configuration recorded: config.json, whose hash names the directory


def distill(req: DistillRequest, registry: Registry) -> Path:
    """Distil `req.model`; the result file's path."""
    started = time.time()
    plan = resolve_request(req, registry)
    out = DistillDir(req.out)
    if out.prepare(plan.recorded, force=req.force, resume=req.resume):
        print(f"{out.path} already holds the result of this distillation; skipped (--force to redo)", file=sys.stderr)
        return out.result_path

    meter = CostMeter(plan.device)
    engine = distillation_engine(req, plan, registry, meter)
    evaluator = preflighted_evaluator(req, plan, registry, meter) if req.evaluate else None
    distil_with_checkpoints(req, plan, engine, out, meter)
    distill_cost = meter.snapshot()
    scores = None
    if evaluator is not None:
        scores = _scores(engine.core, evaluator, plan.teacher_state, plan.teacher_config, out.path, req,
                         plan.evaluation)
    path = out.result_path
    atomic_write_json(path, result_document(plan, out, engine, distill_cost, scores, evaluator, started))
    out.checkpoint_path.unlink(missing_ok=True)
    say(f"distilled model written to {out.path / MODEL_NAME}, result to {path}")
    return path


def resolve_request(req: DistillRequest, registry: Registry) -> DistillPlan:
    method = registry.distiller(req.method)
    options = distill_options(req, method)
    check_request(req)
    spec = registry.stream(req.stream)
    profile = get_profile(req.profile, req.stream)
    device = resolve_device(req.device)
    if req.threads:
        torch.set_num_threads(req.threads)
    cache = check_writable_dir(Path(req.cache_dir) if req.cache_dir else default_cache_dir(), "the cache directory")
    check_writable_dir(req.out, "--out")
    file_config, state = read_model(req.model)
    # A bare state dict is an epsilon model of the preset (what a run's models/taskK.pt holds).
    prediction = file_config.prediction if file_config is not None else "epsilon"
    rounds = plan_rounds(method, options, prediction)  # refuses bad step counts
    evaluation = {**evaluation_settings(profile, spec), **req.evaluation, "compute_accuracy": False}
    stream = spec.build(resolve_data_root(req.data_root), req.seed, cache).at_size(profile.image_size)
    config, state = input_model(req, registry, profile, spec, stream, file_config, state)
    if not 0 <= req.task < stream.num_tasks:
        raise UserError(f"--task must be in 0..{stream.num_tasks - 1}, got {req.task}")
    # A pool of the model's own samples is drawn once the network is on its device (distillation_engine).
    anchor = task_images(stream, req.task) if method.needs_data and options.anchor_source == "data" else None
    plan = DistillPlan(method, options, rounds, profile, device, cache, stream, config, state, evaluation, anchor)
    plan.recorded = recorded_configuration(req, plan)
    return plan


def distill_options(req: DistillRequest, method: type[DistillMethod]) -> DistillOptions:
    ema = None if not req.ema_decay else req.ema_decay
    given = [flag for key, flag in ANCHOR_FLAGS.items() if key in req.regime]
    if given and not method.needs_data:
        raise UserError(f"{given[0]} sets the images of a method that learns from them (dsd-anchored); "
                        f"{method.name} learns from none")
    return DistillOptions(method=method.name, target_steps=req.target_steps, from_steps=req.from_steps,
                          updates=req.updates, batch_size=req.batch_size, learning_rate=req.learning_rate,
                          ema_decay=ema, convert_updates=req.convert_updates,
                          convert_learning_rate=req.convert_learning_rate, **req.regime)


def check_request(req: DistillRequest) -> None:
    if req.checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be >= 0, got {req.checkpoint_every}")
    if req.seed < 0:
        raise UserError(f"--seed must be non-negative, got {req.seed}")
    bad_steps = [s for s in req.eval_steps if s < 1]
    if bad_steps:
        raise UserError(f"--eval-steps must be whole numbers >= 1, got {bad_steps[0]}")


def input_model(req: DistillRequest, registry: Registry, profile: Profile, spec: StreamSpec, stream: Stream,
                file_config: UNetConfig | None, state: dict) -> tuple[UNetConfig, dict]:
    """The input model's configuration (a bare state dict's: --model-preset, else the profile's or the stream's
    model) and its weights, checked against it and against the stream's images."""
    config = file_config
    if config is None:
        name = req.model_preset or profile.model or spec.paper_model
        config = model_config(name, registry.model_preset(name), stream.image_shape[0])
    state = checked_weights(req.model, file_config, state, config)
    if config.in_channels != stream.image_shape[0]:
        raise UserError(f"{req.model} holds a U-Net for {config.in_channels}-channel images, {req.stream} has "
                        f"{stream.image_shape[0]}")
    return config, state


def recorded_configuration(req: DistillRequest, plan: DistillPlan) -> dict:
    method, config, stream = plan.method, plan.teacher_config, plan.stream
    data = (f"the self-taught rounds: {anchor_images(req, plan)}, noised at the rounds' student step starts (the "
            f"anchor); a conversion round: " + DATA if method.needs_data else DATA)
    return {"kind": "distillation", "method": method.name, "options": plan.options.to_dict(method.needs_data),
            "input_model": fingerprint(req.model), "teacher": config.to_dict(),
            "teacher_prediction": config.prediction, "stream": req.stream, "task": req.task, "seed": req.seed,
            "profile": plan.profile.name, "image_size": list(stream.image_shape[1:]),
            "precision": plan.profile.precision, "data": data, "rounds": [r.to_dict() for r in plan.rounds],
            "eval_steps": sorted(set(req.eval_steps)),
            "evaluation": recorded_evaluation(plan.evaluation) if req.evaluate else None}


def anchor_images(req: DistillRequest, plan: DistillPlan) -> str:
    """Where a data-anchored method's images come from, as the configuration records it."""
    options = plan.options
    if options.anchor_source == "samples":
        return (f"{options.anchor_images} samples of the input model (DDIM, {options.from_steps} steps), no "
                f"training image")
    return f"task {req.task}'s {len(plan.stream.tasks[req.task].train)} training images"


def distillation_engine(req: DistillRequest, plan: DistillPlan, registry: Registry, meter: CostMeter) -> Distillation:
    # The trained network is the core's own U-Net, of the student's prediction type, from the teacher's weights.
    core = DiffusionCore(student_config(plan.teacher_config), plan.stream.image_shape, plan.device, meter,
                         precision=plan.profile.precision, samplers=registry.samplers())
    core.model.load_state_dict(plan.teacher_state)
    keys = (req.seed, PURPOSE_DISTILL)
    anchor = plan.anchor
    if plan.method.needs_data and plan.options.anchor_source == "samples":
        # Drawn before a checkpoint's meter reading replaces this one, so a resumed distillation counts it once.
        with meter.phase("teacher_distillation"):
            model = core.frozen_copy(plan.teacher_state, role="teacher", config=plan.teacher_config)
            anchor = sample_pool(core, model, plan.options.from_steps, plan.options.anchor_images, keys)
    return Distillation(core, plan.method, plan.options, plan.teacher_config, core.model, keys=keys, anchor=anchor)


def preflighted_evaluator(req: DistillRequest, plan: DistillPlan, registry: Registry, meter: CostMeter):
    """The evaluator, checked before the distillation: a missing weights file must not cost its work."""
    from ..evaluation import EvalSettings, Evaluator
    try:
        settings = EvalSettings(**plan.evaluation)
    except TypeError as exc:
        raise UserError(f"bad evaluation setting: {exc}") from exc
    evaluator = Evaluator(plan.stream, settings, plan.cache, plan.device, req.seed, meter, progress=req.progress,
                          extractors=registry.extractors())
    evaluator.preflight()
    return evaluator


def distil_with_checkpoints(req: DistillRequest, plan: DistillPlan, engine: Distillation, out: DistillDir,
                            meter: CostMeter) -> None:
    """Every round, from the checkpoint under --resume, checkpointed; each round's model saved as it ends, the
    target's also as model.pt."""
    if req.resume and out.checkpoint_path.is_file():
        saved = out.read_checkpoint()
        engine.load_state_dict(saved["engine"])
        meter.load_state_dict(saved["meter"])
        say(f"resuming {out.path} at round {engine.round_index}, update {engine.update_index}")

    def checkpoint() -> None:
        out.write_checkpoint({"engine": engine.state_dict(), "meter": meter.state_dict()})

    def save_round(record: dict) -> None:
        steps = record.get("neighbours_to") or record["student_steps"]
        save_model_file(out.path / round_model_path(steps), engine.student_config,
                        engine.model.state_dict(), {"sampler": DEFAULT_SAMPLER, "steps": steps},
                        distillation={"method": plan.method.name, "round": len(engine.records) - 1, **record})

    options = plan.options
    say(f"distilling {Path(req.model).name} with {plan.method.name}: "
        + ", ".join(f"{r.teacher_steps}->{r.sampled_steps}" + (" (neighbours)" if r.neighbours_to else "")
                    for r in plan.rounds)
        + f" steps, {', '.join(str(options.updates_in(r)) for r in plan.rounds)} updates of {options.batch_size} "
        + f"chains per round, device {device_name(plan.device)}")
    stop = StopRequest()
    try:
        with meter.phase("teacher_distillation"):
            engine.run(req.progress, checkpoint, req.checkpoint_every, save_round, stop, desc=plan.method.name)
    finally:
        stop.restore()
    atomic_write_bytes(out.path / MODEL_NAME, (out.path / round_model_path(options.target_steps)).read_bytes())


def result_document(plan: DistillPlan, out: DistillDir, engine: Distillation, distill_cost: dict,
                    scores: dict | None, evaluator, started: float) -> dict:
    """distill.json: the configuration, the rounds, the distillation's cost (`distill_cost`, the meter's reading
    before the scoring) and the scores."""
    options, counts = plan.options, distill_cost["counts"]
    return {"kind": "distillation",
            "suite": {"name": "cldiff-bench", "version": __version__, "git": git_revision()},
            "packages": package_versions(), "device": device_name(plan.device),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": plan.recorded, "config_hash": out.config_digest, "model": MODEL_NAME,
            "unet": engine.student_config.to_dict(),
            "sampling": {"sampler": DEFAULT_SAMPLER, "steps": options.target_steps},
            "rounds": engine.records,
            "cost": {"updates": sum(r["updates"] for r in engine.records), "images_per_update": options.batch_size,
                     "forwards_per_update_per_image": plan.method.forwards_per_update,
                     "network_evaluations": counts["student_forward"] + counts["teacher_forward"],
                     "counts": counts, "seconds": distill_cost["seconds"],
                     "note": "counts include the chains' spread along the path at each round's start"},
            "scores": scores, "evaluation": evaluator.describe() if evaluator is not None else None,
            "wall_seconds": time.time() - started}


def _scores(core: DiffusionCore, evaluator, teacher_state: dict, teacher_config, out: Path, req: DistillRequest,
            evaluation: dict) -> dict:
    """{steps: {"distilled": metrics or None, "ddim": the input model's metrics with plain DDIM}}."""
    from ..evaluation.solver import generate_images
    from ..model_source import read_model as read

    settings = evaluator.settings
    seeds = derive_seeds(settings.num_generated, req.seed, req.task, PURPOSE_SCORE)  # `score`'s seeds

    def metrics(model, steps: int) -> dict:
        with core.meter.phase("evaluation"):
            images = generate_images(lambda chunk: core.generate(model, list(chunk), steps), seeds,
                                     settings.batch_size, core.image_shape, req.progress, f"samples, {steps} steps")
            scored = evaluator.score_images(req.task, images)
        return {k: scored[k] for k in ("fid", "kld", "ard", "num_generated")}

    scores = {}
    teacher = core.frozen_copy(teacher_state, role="student", config=teacher_config)
    for steps in sorted(set(req.eval_steps)):
        distilled = None
        path = out / round_model_path(steps)
        if path.is_file():
            config, state = read(path)
            distilled = metrics(core.frozen_copy(state, role="student", config=config), steps)
        scores[str(steps)] = {"distilled": distilled, "ddim": metrics(teacher, steps)}
        shown = ", ".join(f"{name} FID {m['fid']:.4g}" for name, m in scores[str(steps)].items() if m)
        say(f"{steps} steps: {shown}")
    return scores
