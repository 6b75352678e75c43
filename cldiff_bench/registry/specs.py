"""What a stream or FID-extractor plugin registers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..streams.base import Stream

if TYPE_CHECKING:  # torch-fidelity is imported only when an extractor is built
    import torch
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    from ..evaluation import EvalSettings


@dataclass(frozen=True)
class StreamSpec:
    name: str
    description: str
    build: Callable[[Path, int, Path], Stream]  # (data_root, seed, cache_dir) -> Stream
    needs_data: bool = True  # False for streams that ship with the suite or its dependencies
    # The study's settings for this data set: paper-profile model and budget, metric sampling steps.
    paper_model: str = "paper-fmnist"
    paper_epochs: int = 100
    paper_batch_size: int = 128
    fid_steps: int = 10
    # Epochs of the CPU evaluation classifier: a property of the data set (so every profile shares one cached
    # classifier), not of a run's budget.
    evaluator_epochs: int = 3
    # Share of each class's training images the evaluation classifier holds out (its best epoch, the oracle).
    evaluator_holdout: float = 1 / 6
    # Its network (evaluation/networks.py): the small CNN reads digits and clothes; natural images need more.
    evaluator_arch: str = "ruler-cnn"
    # Whether a mirrored image is still of its class: the evaluation classifier then trains with random flips.
    mirror_invariant: bool = False
    # The study's training transform flips this data set's images at random (the paper profile does too).
    study_hflip: bool = False
    extra: dict = field(default_factory=dict)


def no_provenance(settings: "EvalSettings") -> dict:
    """The default `ExtractorSpec.describe`: nothing to record beyond the extractor's name and settings."""
    return {}


@dataclass(frozen=True)
class ExtractorSpec:
    """An FID feature extractor (`--extractor NAME`).

    `build(classifier, device, settings)` returns (a torch-fidelity `FeatureExtractorBase` on `device`, the name of
    the feature FID uses); `classifier` is the evaluation classifier network when `needs_classifier`, else None, and
    `settings` the `EvalSettings`. An extractor that also provides a "logits" feature labels the samples for KLD and
    ARD in the same pass; otherwise the evaluation classifier labels them.

    `identity(settings, classifier_info)` names what real-image statistics depend on beyond the images (network and
    a hash of its weights): cached statistics are keyed by it, so it must change whenever the features would.
    `classifier_info` is the evaluation classifier's info dict when `needs_classifier`, else None.

    `describe(settings)` returns extra provenance merged into the result file's `evaluation` block (keys the suite
    writes itself are refused).
    """
    name: str
    description: str
    build: Callable[[Any, "torch.device", "EvalSettings"], "tuple[FeatureExtractorBase, str]"]
    identity: Callable[["EvalSettings", "dict | None"], str]
    describe: Callable[["EvalSettings"], dict] = no_provenance
    needs_classifier: bool = False
