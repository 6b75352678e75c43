"""FID, KLD and ARD of a model's samples after a task: the samples drawn by keyed seeds, their features and their
classes as the evaluation classifier sees them, against the real test images of the seen classes."""
from __future__ import annotations

from typing import Callable

import torch

from ..diffusion.seeding import derive_seeds
from ..streams.base import Stream
from .features import extract_features
from .instruments import EvaluationClassifier, FidExtractor
from .metrics import class_histogram, fid_from_statistics, fid_statistics, kl_divergence, total_variation
from .real_statistics import RealStatistics
from .solver import UINT8_CONVERSIONS, generate_images

_PURPOSE_FID_SAMPLES = 0xE001


class SampleScorer:
    def __init__(self, stream: Stream, settings, classifier: EvaluationClassifier, extractor: FidExtractor,
                 real: RealStatistics, progress: bool = True):
        self.stream = stream
        self.settings = settings
        self.classifier = classifier
        self.extractor = extractor
        self.real = real
        self.progress = progress

    def draw(self, k: int, generate: Callable[[list[int]], torch.Tensor], seed: int) -> torch.Tensor:
        """The uint8 metric samples after task k of the run with `seed`, drawn by `generate` (seeds -> images)."""
        s = self.settings
        seeds = derive_seeds(s.num_generated, seed, k, _PURPOSE_FID_SAMPLES)
        return generate_images(generate, seeds, s.batch_size, self.stream.image_shape, self.progress,
                               f"FID samples task {k}", UINT8_CONVERSIONS[s.generated_to_uint8])

    def score(self, k: int, fake: torch.Tensor) -> dict:
        s = self.settings
        extractor, feature = self.extractor.built()
        feats = extract_features(extractor, fake, s.batch_size, self.extractor.device, self.progress,
                                 f"FID generated features task {k}")
        real_stats, real_hash, num_real = self.real.of_task(k)
        fid = fid_from_statistics(fid_statistics(feats[feature]), real_stats)
        logits = feats["logits"] if "logits" in feats else self.classifier.logits(fake)
        p_gen = class_histogram(logits.argmax(1), self.stream.num_classes)
        p_true = class_histogram(self.stream.test_seen(k).labels, self.stream.num_classes)
        return {"fid": fid, "fid_extractor": s.extractor, "kld": kl_divergence(p_true, p_gen),
                "ard": total_variation(p_true, p_gen), "class_histogram_true": p_true.tolist(),
                "class_histogram_generated": p_gen.tolist(), "num_generated": len(fake), "num_real": num_real,
                "real_stats_hash": real_hash, "fid_steps": s.fid_steps,
                "evaluation_classifier_version": self.classifier.info["version"]}
