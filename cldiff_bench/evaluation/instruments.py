"""What the metrics read images with: the evaluation classifier (the ruler) and the FID feature extractor, each
made on first use, so a run that needs neither never loads them."""
from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import torch

from ..errors import UserError
from ..streams.base import Stream
from .classifier import load_evaluation_classifier, predict_logits, ruler_record

if TYPE_CHECKING:
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    from ..registry.specs import ExtractorSpec


class EvaluationClassifier:
    """The evaluation classifier of `stream`, loaded (or trained and cached) on first use, frozen."""

    def __init__(self, stream: Stream, settings, cache_dir: pathlib.Path, device: torch.device):
        self.stream = stream
        self.settings = settings
        self.cache_dir = cache_dir
        self.device = device
        self.network: torch.nn.Module | None = None
        self.info: dict | None = None

    def loaded(self) -> torch.nn.Module:
        if self.network is None:
            self.network, self.info = load_evaluation_classifier(self.stream, self.settings, self.cache_dir,
                                                                 self.device)
            self.network.requires_grad_(False)
        return self.network

    def logits(self, images_u8: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.loaded(), images_u8, self.settings.batch_size, self.device)

    def record(self) -> dict:
        """Its provenance for the result file: the loaded one's, else what its files say (it was never needed)."""
        return self.info or ruler_record(self.stream, self.settings, self.cache_dir)


class FidExtractor:
    """The torch-fidelity feature extractor of `spec` on `device`, built on first use, with the feature FID uses and
    the identity the real statistics are keyed by."""

    def __init__(self, spec: ExtractorSpec, classifier: EvaluationClassifier, settings, device: torch.device):
        self.spec = spec
        self.classifier = classifier
        self.settings = settings
        self.device = device
        self.extractor: FeatureExtractorBase | None = None
        self.feature: str | None = None
        self.identity: str | None = None

    def built(self) -> tuple[FeatureExtractorBase, str]:
        if self.extractor is None:
            spec = self.spec
            classifier = self.classifier.loaded() if spec.needs_classifier else None
            extractor, feature = spec.build(classifier, self.device, self.settings)
            provided = tuple(extractor.get_requested_features_list())
            if feature not in provided:
                raise UserError(f"FID feature extractor {spec.name!r} names the feature {feature!r} for FID but "
                                f"computes only {', '.join(map(repr, provided))}")
            # What the real statistics depend on, beyond the images: the network and its weights.
            self.identity = spec.identity(self.settings, self.classifier.info if spec.needs_classifier else None)
            self.extractor, self.feature = extractor.to(self.device).eval(), feature
        return self.extractor, self.feature
