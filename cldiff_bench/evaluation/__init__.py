"""Evaluation after every task: FID (torch-fidelity), KLD / ARD of the class histogram, and solver accuracy.

All randomness is keyed by (run seed, task index, purpose) through `derive_seeds` / `generator`, so an evaluation
gives the same numbers whether or not the run was interrupted and resumed before it. What is shared between
runs (the evaluation classifier, the real-image statistics) is cached under `cache_dir` and keyed by everything
that determines it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import torch

from ..diffusion.samplers import DEFAULT_SAMPLER
from ..errors import UserError, unknown_name
from ..streams.base import Stream
from .classifier import CLASSIFIER_ARCHS, ruler_files, train_evaluation_classifier
from .instruments import EvaluationClassifier, FidExtractor
from .metrics import (class_histogram, fid_from_features, fid_from_statistics, fid_statistics, kl_divergence,
                      total_variation)
from .description import describe_evaluation
from .real_statistics import RealStatistics
from .sample_scores import SampleScorer
from .solver import KD_DIRECTIONS, SOLVER_ARCHS, SOLVER_MODES, UINT8_CONVERSIONS, Solver, kd_loss

if TYPE_CHECKING:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    from ..registry.specs import ExtractorSpec

__all__ = ["EvalSettings", "Evaluator", "train_evaluation_classifier", "class_histogram", "kl_divergence",
           "total_variation", "fid_statistics", "fid_from_statistics", "fid_from_features", "kd_loss",
           "resolve_extractor", "build_extractor", "SOLVER_MODES", "KD_DIRECTIONS", "CLASSIFIER_ARCHS"]

@dataclass
class EvalSettings:
    extractor: str = "classifier"          # a registered FID feature extractor (`cldiff-bench list`), e.g. inception
    num_generated: int = 1000              # generated samples for FID/KLD per task (paper profile: 10000)
    num_real: int | None = None            # real test images used (None = all seen test images)
    batch_size: int = 250                  # generation / feature batch
    fid_steps: int = 10                    # sampling steps of the metric samples (the caller samples with them)
    # The registered sampler the metric samples (and the solver's replay) are drawn with; recorded in a run's
    # configuration only when it is not the default, so the configurations made before it stay.
    sampler: str = DEFAULT_SAMPLER
    classifier_arch: str = "ruler-cnn"     # evaluation classifier: "ruler-cnn" (CPU) | "resnet18-imagenet" (study's)
    classifier_epochs: int = 3
    classifier_holdout: float = 1 / 6      # share of each class's training images held out (best epoch, oracle)
    classifier_flip: bool = False          # random horizontal flips in its training (data sets whose classes allow)
    classifier_weights: str | None = None  # ImageNet ResNet-18 weights file for resnet18-imagenet (else torchvision's)
    ruler_file: str | None = None          # score with this evaluation classifier instead of the pinned one
    solver_arch: str = "small-cnn"         # the replay-trained classifier: "small-cnn" | "simple-cnn" (study's)
    solver_epochs: int = 1                 # the replay-trained classifier ("solver") per task
    solver_batch_size: int = 64            # real images per batch (as many replayed ones are added)
    solver_max_images: int | None = None   # cap on the solver's training images per task and epoch (None: all)
    # Draw the solver's replay once per task and show it in every epoch, instead of fresh every epoch: a CPU
    # budget's choice where the draw at the study's sampling steps costs more than the solver's training.
    solver_replay_once: bool = False
    solver_flip: bool = False              # random horizontal flips of the solver's real images (study: CIFAR-10)
    # How generated images become the 8-bit images FID, KLD and ARD read: "round" (the suite's), or "truncate",
    # the study's torchmetrics FID with normalize=True, (x * 255).byte() of images in [0, 1].
    generated_to_uint8: str = "round"
    solver_lr: float = 1e-3
    kd_temperature: float = 2.0
    kd_direction: str = "standard"         # "standard": -sum p_teacher log p_student; "original-reversed": the reverse
    inception_weights: str | None = None   # local weights file for torch-fidelity's inception-v3-compat
    compute_fid: bool = True
    compute_accuracy: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Everything but the names of the extractor and the sampler, which are checked against the run's registry
        (`resolve_extractor`; the run's context and `score` for the sampler)."""
        if self.classifier_arch not in CLASSIFIER_ARCHS:
            raise unknown_name("classifier architecture", self.classifier_arch, CLASSIFIER_ARCHS)
        if self.solver_arch not in SOLVER_ARCHS:
            raise unknown_name("solver architecture", self.solver_arch, SOLVER_ARCHS)
        if not 0 <= float(self.classifier_holdout) < 1:
            raise UserError(f"classifier_holdout must be in [0, 1), got {self.classifier_holdout}")
        if self.generated_to_uint8 not in UINT8_CONVERSIONS:
            raise unknown_name("conversion of generated images to 8 bits", self.generated_to_uint8,
                               UINT8_CONVERSIONS)
        if self.kd_direction not in KD_DIRECTIONS:
            raise unknown_name("KD direction", self.kd_direction, KD_DIRECTIONS)
        for name in ("num_generated", "batch_size", "classifier_epochs", "solver_batch_size"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"evaluation setting {name} must be >= 1, got {getattr(self, name)}")
        if self.compute_fid and self.num_generated < 2:
            raise UserError("FID needs num_generated >= 2")
        if self.solver_max_images is not None and self.solver_max_images < 1:
            raise UserError(f"solver_max_images must be >= 1 (or None for all), got {self.solver_max_images}")
        if self.num_real is not None and self.num_real < 2:
            raise UserError(f"num_real must be >= 2 (or None for all seen test images), got {self.num_real}")
        if self.solver_epochs < 0 or self.kd_temperature <= 0 or self.solver_lr <= 0:
            raise UserError("solver_epochs must be >= 0, kd_temperature and solver_lr > 0")


def resolve_extractor(name: str, extractors: Mapping[str, ExtractorSpec]) -> ExtractorSpec:
    """The ExtractorSpec of `name` among `extractors` ({name: ExtractorSpec}: the run's `Registry.extractors()`)."""
    if name not in extractors:
        raise unknown_name("FID feature extractor", name, extractors)
    return extractors[name]


def build_extractor(name: str, classifier: torch.nn.Module | None, device: torch.device, extractors,
                    inception_weights: str | None = None) -> tuple[FeatureExtractorBase, str]:
    """(torch-fidelity feature extractor on `device`, the feature name that FID uses) of the extractor `name`
    registered in `extractors` ({name: ExtractorSpec}, `Registry.extractors()`), with default evaluation settings
    but `inception_weights`. A shortcut for scripts and tests; the Evaluator builds from its specs itself."""
    spec = resolve_extractor(name, extractors)
    ext, feature = spec.build(classifier, device, EvalSettings(extractor=name, inception_weights=inception_weights))
    return ext.to(device).eval(), feature


class Evaluator:
    """Scores the diffusion model after each task of `stream`; holds the solver between tasks.

    `extractors` ({name: ExtractorSpec}: the run's `Registry.extractors()`, with its `--plugin` modules') are where
    `settings.extractor` is looked up."""

    def __init__(self, stream: Stream, settings: EvalSettings, cache_dir: pathlib.Path, device: torch.device,
                 seed: int, meter=None, progress: bool = True, *, extractors: Mapping[str, ExtractorSpec]):
        settings.validate()
        self.extractor_spec = resolve_extractor(settings.extractor, extractors)
        self.stream = stream
        self.settings = settings
        self.cache_dir = pathlib.Path(cache_dir)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.meter = meter
        self.progress = progress
        self.solver = Solver(stream.num_classes, self.seed, self.device, settings, stream.image_shape[0]) \
            if settings.compute_accuracy else None
        self.history: list[dict] = []
        # The model after the previous task, which a "replay" solver replays from; evaluator state (checkpointed)
        # so a resumed run replays from the same model.
        self.previous_model: dict[str, torch.Tensor] | None = None
        self.evaluation_classifier = EvaluationClassifier(stream, settings, self.cache_dir, self.device)
        self.fid_extractor = FidExtractor(self.extractor_spec, self.evaluation_classifier, settings, self.device)
        self.real = RealStatistics(stream, settings, self.cache_dir, self.fid_extractor, progress)
        self.scorer = SampleScorer(stream, settings, self.evaluation_classifier, self.fid_extractor, self.real,
                                   progress)

    def preflight(self) -> None:
        """Check before any training that what the evaluation needs can be had: the evaluation classifier (cached,
        or its pretrained weights at hand) and the FID extractor with its weights."""
        ruler_files(self.stream, self.settings, self.cache_dir)  # raises, before any training, if not at hand
        if self.settings.compute_fid and not self.extractor_spec.needs_classifier:
            self.fid_extractor.built()

    def real_statistics(self, k: int) -> tuple[dict, str, int]:
        """(mu/sigma of the real seen test images, their sha256, number of images), from the cache if present."""
        return self.real.of_task(k)

    def label(self, images_u8: torch.Tensor) -> list[int]:
        """The evaluation classifier's class for each uint8 image (what KLD and ARD count)."""
        return self.evaluation_classifier.logits(images_u8).argmax(1).tolist()

    def score_images(self, k: int, fake: torch.Tensor) -> dict:
        """FID, KLD and ARD of uint8 images `fake` as if a model had drawn them after task k (the oracle scores
        real held-out images this way)."""
        return self.scorer.score(k, fake)

    # -- the per-task evaluation ---------------------------------------------------------------------------------

    def after_task(self, k: int, generate: Callable[[list[int]], torch.Tensor],
                   generate_previous: Callable[[list[int]], torch.Tensor] | None, solver_mode: str) -> dict:
        if solver_mode not in SOLVER_MODES:
            raise unknown_name("solver mode", solver_mode, SOLVER_MODES)
        if not 0 <= k < self.stream.num_tasks:
            raise ValueError(f"task index {k} outside the stream's {self.stream.num_tasks} tasks")
        phase = self.meter.phase("evaluation") if self.meter is not None else contextlib.nullcontext()
        with phase:
            result = {"task": k, "seen_classes": list(self.stream.seen_classes(k))}
            if self.settings.compute_fid:
                result.update(self.scorer.score(k, self.scorer.draw(k, generate, self.seed)))
            if self.solver is not None:
                result["solver_mode"] = solver_mode
                result.update(self.solver.train_task(self.stream, k, solver_mode, generate_previous, self.meter,
                                                     self.progress))
                test = self.stream.test_seen(k)
                result["accuracy"] = self.solver.accuracy(test.images, test.labels)
        self.history.append(result)
        return result

    def after_task_with_model(self, k: int, generate: Callable[[list[int]], torch.Tensor], model_state: dict,
                              solver_mode: str,
                              sampler_of: Callable[[dict], Callable[[list[int]], torch.Tensor]]) -> dict:
        """`after_task` for a run that passes the model after each task (`model_state`, which `generate`
        samples): a "replay" solver replays from the model passed with task k - 1, sampled by `sampler_of(state)`."""
        previous = None
        if solver_mode == "replay" and self.previous_model is not None:
            previous = sampler_of(self.previous_model)
        result = self.after_task(k, generate, previous, solver_mode)
        if solver_mode == "replay":
            self.previous_model = {n: v.detach().cpu().clone() for n, v in model_state.items()}
        return result

    # -- resume and provenance -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"solver": self.solver.state_dict() if self.solver is not None else None,
                "history": json.loads(json.dumps(self.history)), "seed": self.seed,
                "previous_model": self.previous_model}

    def load_state_dict(self, state: dict) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(f"evaluator state is for seed {state['seed']}, this evaluator has seed {self.seed}")
        if self.solver is not None and state.get("solver") is not None:
            self.solver.load_state_dict(state["solver"])
        self.history = list(state.get("history", []))
        self.previous_model = state.get("previous_model")

    def describe(self) -> dict:
        return describe_evaluation(self.settings, self.evaluation_classifier, self.extractor_spec)
