"""Class-incremental splits through Avalanche, so class orders are those of SplitFMNIST / SplitCIFAR10."""
from __future__ import annotations

import warnings

import torch

from .base import ImageSet, Stream, Task


class _LabelsOnly(torch.utils.data.Dataset):
    """What Avalanche's generator needs to split by class: the targets. Images stay in our tensors."""

    def __init__(self, labels: torch.Tensor):
        self.targets = labels.tolist()

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.zeros(1), self.targets[i]


def avalanche_class_split(train_labels: torch.Tensor, test_labels: torch.Tensor, n_tasks: int,
                          seed: int) -> tuple[list[int], list[list[int]]]:
    """(class order, classes per task) exactly as `nc_benchmark(..., n_experiences=n_tasks, seed=seed)` gives."""
    with warnings.catch_warnings():
        # Avalanche imports optional solver packages that warn about themselves on import (jaxopt's deprecation,
        # qpsolvers without a solver backend); the suite uses neither, so their warnings say nothing to a user.
        warnings.filterwarnings("ignore", module=r"(jaxopt|qpsolvers)(\..*)?$")
        warnings.filterwarnings("ignore", message=r".*(JAXopt|qpsolvers|QP solver).*")
        from avalanche.benchmarks import nc_benchmark  # slow to import: only when a stream is built

    # nc_benchmark seeds torch's global generator; keep that from leaking into the run.
    with torch.random.fork_rng(devices=[]):
        bench = nc_benchmark(_LabelsOnly(train_labels), _LabelsOnly(test_labels), n_experiences=n_tasks,
                             task_labels=False, shuffle=True, seed=seed)
        order = [int(c) for c in bench.classes_order]
        per_task = [sorted(int(c) for c in exp.classes_in_this_experience) for exp in bench.train_stream]
    return order, per_task


def split_stream(name: str, dataset: str, train: ImageSet, test: ImageSet, class_names: list[str], n_tasks: int,
                 seed: int, info: dict | None = None) -> Stream:
    order, per_task = avalanche_class_split(train.labels, test.labels, n_tasks, seed)
    tasks = [Task(i, classes, train.of_classes(classes), test.of_classes(classes)) for i, classes in enumerate(per_task)]
    return Stream(name=name, dataset=dataset, num_classes=len(class_names), class_names=class_names,
                  image_shape=tuple(train.images.shape[1:]), class_order=order, tasks=tasks, seed=seed,
                  info=info or {})
