"""What a stream plugin registers."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..streams.base import Stream


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
    # Whether a mirrored image is still of its class: the evaluation classifier then trains with random flips.
    mirror_invariant: bool = False
    # The study's training transform flips this data set's images at random (the paper profile does too).
    study_hflip: bool = False
    extra: dict = field(default_factory=dict)
