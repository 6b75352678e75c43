"""Class-incremental streams as plain tensors: what every strategy, the trainer and the evaluator consume.

Images are stored as uint8 (N, C, 32, 32), converted to float in [-1, 1] per batch with `to_model_range`, so a
whole data set sits in memory cheaply and batches are built by indexing, not by a Python data-loader loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 by rounding (not truncation), clamped."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round_().to(torch.uint8)


def to_uint8_truncated(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 as the study's evaluation converts its samples: diffusers' pipeline output
    (x / 2 + 0.5).clamp(0, 1), then torchmetrics' (x * 255).byte(), which truncates (half a level darker on
    average than rounding)."""
    return (x.float() / 2 + 0.5).clamp(0, 1).mul(255).to(torch.uint8)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) uint8 -> (N, C, size, size) uint8, bilinear with antialiasing, rounded."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images.contiguous()
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


@dataclass
class ImageSet:
    """Images (uint8, N x C x H x W) with integer class labels."""
    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.images.dtype != torch.uint8:
            raise TypeError(f"ImageSet images must be uint8, got {self.images.dtype}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    def resized(self, size: int) -> "ImageSet":
        return ImageSet(resize_uint8(self.images, size), self.labels)

    def of_classes(self, classes) -> "ImageSet":
        mask = torch.isin(self.labels, torch.as_tensor(list(classes), dtype=self.labels.dtype))
        return ImageSet(self.images[mask], self.labels[mask])

    @staticmethod
    def concat(sets: list["ImageSet"]) -> "ImageSet":
        return ImageSet(torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets]))


@dataclass
class Task:
    index: int
    classes: list[int]
    train: ImageSet
    test: ImageSet


@dataclass
class Stream:
    """A class-incremental stream: `tasks[k]` holds the train/test images of the classes of task k."""
    name: str
    dataset: str  # identifies the underlying data set (for caches such as the evaluation classifier)
    num_classes: int
    class_names: list[str]
    image_shape: tuple[int, int, int]
    class_order: list[int]
    tasks: list[Task]
    seed: int
    info: dict = field(default_factory=dict)

    def at_size(self, size: int | None) -> "Stream":
        """The same stream with its images resized to size x size (a budget choice of CPU profiles); `dataset`
        names the size, so caches built on the images (the evaluation classifier) are kept apart."""
        if size is None or tuple(self.image_shape[1:]) == (size, size):
            return self
        tasks = [replace(t, train=t.train.resized(size), test=t.test.resized(size)) for t in self.tasks]
        return replace(self, tasks=tasks, image_shape=(self.image_shape[0], size, size),
                       dataset=f"{self.dataset}@{size}px", info={**self.info, "image_size": size})

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def seen_classes(self, k: int) -> list[int]:
        return [c for task in self.tasks[: k + 1] for c in task.classes]

    def train_union(self, k: int) -> ImageSet:
        """All training images of tasks 0..k (what `joint` trains on)."""
        return ImageSet.concat([t.train for t in self.tasks[: k + 1]])

    def test_seen(self, k: int) -> ImageSet:
        """The test images of all classes seen up to and including task k."""
        return ImageSet.concat([t.test for t in self.tasks[: k + 1]])

    def describe(self) -> dict:
        return {"name": self.name, "dataset": self.dataset, "num_tasks": self.num_tasks,
                "num_classes": self.num_classes, "image_shape": list(self.image_shape),
                "class_order": list(self.class_order), "classes_per_task": [t.classes for t in self.tasks],
                "class_names": self.class_names, "seed": self.seed,
                "train_sizes": [len(t.train) for t in self.tasks], "test_sizes": [len(t.test) for t in self.tasks],
                **self.info}
