"""Evaluation after every task: FID (torch-fidelity), KLD / ARD of the class histogram, and solver accuracy.

All randomness is keyed by (run seed, task index, purpose) through `derive_seeds` / `generator`, so an evaluation
gives the same numbers whether or not the run was interrupted and resumed before it. What is shared between
runs (the evaluation classifier, the real-image statistics) is cached under `cache_dir` and keyed by everything
that determines it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import torch
import torch_fidelity

from ..diffusion.samplers import DEFAULT_SAMPLER
from ..diffusion.seeding import derive_seeds, generator
from ..errors import UserError, unknown_name
from ..streams.base import ImageSet, Stream
from ..io import atomic_torch_save, load_tensors, sha256_of_arrays
from .classifier import (CLASSIFIER_ARCHS, CLASSIFIER_CODE_VERSION,
                         load_evaluation_classifier, predict_logits, ruler_files, ruler_record,
                         train_evaluation_classifier)
from .features import extract_features
from .metrics import (KLD_EPSILON, class_histogram, fid_from_features, fid_from_statistics, fid_statistics,
                      kl_divergence, total_variation)
from .solver import (KD_DIRECTIONS, KD_SCALE_T2, SOLVER_ARCHS, SOLVER_MODES, UINT8_CONVERSIONS, Solver,
                     generate_images, kd_loss)

if TYPE_CHECKING:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    from ..registry.specs import ExtractorSpec

__all__ = ["EvalSettings", "Evaluator", "train_evaluation_classifier", "class_histogram", "kl_divergence",
           "total_variation", "fid_statistics", "fid_from_statistics", "fid_from_features", "kd_loss",
           "resolve_extractor", "build_extractor", "SOLVER_MODES", "KD_DIRECTIONS", "CLASSIFIER_ARCHS"]

_PURPOSE_FID_SAMPLES = 0xE001
_PURPOSE_REAL_SUBSET = 0xE002
# Bump when anything that changes cached real statistics changes (preprocessing, statistics dtype).
REAL_STATS_VERSION = "r1"


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
        self._classifier = None
        self._classifier_info: dict | None = None
        self._extractor = None
        self._extractor_id: str | None = None
        self._feature: str | None = None

    # -- shared, cached pieces -----------------------------------------------------------------------------------

    def preflight(self) -> None:
        """Check before any training that what the evaluation needs can be had: the evaluation classifier (cached,
        or its pretrained weights at hand) and the FID extractor with its weights."""
        ruler_files(self.stream, self.settings, self.cache_dir)  # raises, before any training, if not at hand
        if self.settings.compute_fid and not self.extractor_spec.needs_classifier:
            self._extractor_and_feature()

    def classifier(self):
        if self._classifier is None:
            self._classifier, self._classifier_info = load_evaluation_classifier(
                self.stream, self.settings, self.cache_dir, self.device)
            self._classifier.requires_grad_(False)
        return self._classifier

    def _extractor_and_feature(self):
        if self._extractor is None:
            spec = self.extractor_spec
            classifier = self.classifier() if spec.needs_classifier else None
            extractor, feature = spec.build(classifier, self.device, self.settings)
            provided = tuple(extractor.get_requested_features_list())
            if feature not in provided:
                raise UserError(f"FID feature extractor {spec.name!r} names the feature {feature!r} for FID but "
                                f"computes only {', '.join(map(repr, provided))}")
            # What the real statistics depend on, beyond the images: the network and its weights.
            self._extractor_id = spec.identity(self.settings, self._classifier_info if spec.needs_classifier
                                               else None)
            self._extractor, self._feature = extractor.to(self.device).eval(), feature
        return self._extractor, self._feature

    def _real_set(self, k: int) -> ImageSet:
        real = self.stream.test_seen(k)
        n = self.settings.num_real
        if n is None or n >= len(real):
            return real
        # Keyed by the seen classes, not the run seed: every run of every method meets the same reference images.
        g = generator(_PURPOSE_REAL_SUBSET, len(real), *self.stream.seen_classes(k))
        idx = torch.randperm(len(real), generator=g)[:n].sort().values
        return ImageSet(real.images[idx], real.labels[idx])

    def real_statistics(self, k: int) -> tuple[dict, str, int]:
        """(mu/sigma of the real seen test images, their sha256, number of images), from the cache if present."""
        extractor, feature = self._extractor_and_feature()
        real = self._real_set(k)
        key = {"version": REAL_STATS_VERSION, "dataset": self.stream.dataset,
               "seen_classes": list(self.stream.seen_classes(k)), "extractor": self._extractor_id,
               "feature": feature, "num_real": len(real),
               "images_sha256": sha256_of_arrays(real.images, real.labels)}
        key_json = json.dumps(key, sort_keys=True)
        name = f"{self.stream.dataset}-{self.settings.extractor}-{hashlib.sha256(key_json.encode()).hexdigest()[:20]}.pt"
        path = self.cache_dir / "fid_stats" / name
        stats = None
        if path.exists():
            cached = load_tensors(path)
            if cached.get("key") == key_json:
                stats = {"mu": cached["mu"].numpy(), "sigma": cached["sigma"].numpy()}
        if stats is None:
            feats = extract_features(extractor, real.images, self.settings.batch_size, self.device, self.progress,
                                     f"FID real features task {k}")[feature]
            stats = fid_statistics(feats)
            atomic_torch_save({"mu": torch.from_numpy(stats["mu"]), "sigma": torch.from_numpy(stats["sigma"]),
                               "key": key_json}, path)
        return stats, sha256_of_arrays(stats["mu"], stats["sigma"]), len(real)

    def label(self, images_u8: torch.Tensor) -> list[int]:
        """The evaluation classifier's class for each uint8 image (what KLD and ARD count)."""
        return predict_logits(self.classifier(), images_u8, self.settings.batch_size, self.device).argmax(1).tolist()

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
                result.update(self._generative_metrics(k, generate))
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

    def _generative_metrics(self, k: int, generate) -> dict:
        s = self.settings
        seeds = derive_seeds(s.num_generated, self.seed, k, _PURPOSE_FID_SAMPLES)
        fake = generate_images(generate, seeds, s.batch_size, self.stream.image_shape, self.progress,
                               f"FID samples task {k}", UINT8_CONVERSIONS[s.generated_to_uint8])
        return self.score_images(k, fake)

    def score_images(self, k: int, fake: torch.Tensor) -> dict:
        """FID, KLD and ARD of uint8 images `fake` as if a model had drawn them after task k (the oracle scores
        real held-out images this way)."""
        s = self.settings
        extractor, feature = self._extractor_and_feature()
        feats = extract_features(extractor, fake, s.batch_size, self.device, self.progress,
                                 f"FID generated features task {k}")
        real_stats, real_hash, num_real = self.real_statistics(k)
        fid = fid_from_statistics(fid_statistics(feats[feature]), real_stats)
        logits = feats["logits"] if "logits" in feats else predict_logits(self.classifier(), fake, s.batch_size,
                                                                           self.device)
        p_gen = class_histogram(logits.argmax(1), self.stream.num_classes)
        p_true = class_histogram(self.stream.test_seen(k).labels, self.stream.num_classes)
        return {"fid": fid, "fid_extractor": s.extractor, "kld": kl_divergence(p_true, p_gen),
                "ard": total_variation(p_true, p_gen), "class_histogram_true": p_true.tolist(),
                "class_histogram_generated": p_gen.tolist(), "num_generated": len(fake), "num_real": num_real,
                "real_stats_hash": real_hash, "fid_steps": s.fid_steps,
                "evaluation_classifier_version": self._classifier_info["version"]}

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
        s = self.settings
        out = {"extractor": s.extractor, "torch_fidelity_version": torch_fidelity.__version__,
               "num_generated": s.num_generated, "num_real": "all seen test images" if s.num_real is None
               else s.num_real, "fid_steps": s.fid_steps, "settings": s.to_dict(),
               "fid": "torch-fidelity fid_statistics_to_metric on float64 statistics; generated images rounded "
                      "to uint8, grayscale repeated to 3 channels, against the test images of all seen classes",
               "kld": f"KL(p_true || p_gen) in nats; {KLD_EPSILON:g} added to both histograms, both renormalised",
               "ard": "total variation 0.5 * sum |p_true - p_gen| of the unsmoothed histograms",
               "solver": {"arch": s.solver_arch, "kd_direction": s.kd_direction, "kd_temperature": s.kd_temperature,
                          "kd_scaled_by_t_squared": KD_SCALE_T2, "optimizer": "Adam, fresh per task"}}
        # Where a weights file lives is not part of what was computed; its name (and the version's hash) is.
        for name in ("inception_weights", "classifier_weights", "ruler_file"):
            if getattr(s, name):
                out["settings"][name] = pathlib.Path(getattr(s, name)).name
        out["evaluation_classifier"] = self._classifier_info or ruler_record(self.stream, s, self.cache_dir)
        out["evaluation_classifier_code_version"] = CLASSIFIER_CODE_VERSION
        extra = self.extractor_spec.describe(s)
        clash = sorted(set(extra) & set(out))
        if clash:
            raise UserError(f"FID feature extractor {s.extractor!r} describes {', '.join(clash)}, which the suite "
                            f"records itself; name its provenance differently")
        out.update(extra)
        return out
