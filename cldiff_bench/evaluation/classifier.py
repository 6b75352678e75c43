"""The evaluation classifier: one per data set, trained by the suite, shared by every run that evaluates on it.

It labels generated samples (for KLD / ARD) and, with the `classifier` extractor, provides the FID features. It is
trained with a fixed suite seed rather than the run seed, so that runs with different seeds are scored by the
same network; its version string names everything that changes the weights, and is part of every cache key that
depends on it.
"""
from __future__ import annotations

import hashlib
import math
import pathlib
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.seeding import derive_seed, generator
from ..errors import UserError, unknown_name
from ..streams.base import Stream, to_model_range
from ..io import atomic_torch_save, atomic_write_json, load_tensors

# Bump when the architecture, the training recipe or the preprocessing changes: it invalidates cached classifiers.
CLASSIFIER_CODE_VERSION = "c1"
# The evaluation classifier of a data set is the same for every run (see the module docstring).
EVALUATION_CLASSIFIER_SEED = 0
# The evaluation classifier belongs to the data set, not to a run: every run, whatever its seed, uses the one trained
# on the stream as this seed splits it (the split decides the order of the training data and so the weights).
REFERENCE_SPLIT_SEED = 0
CLASSIFIER_ARCHS = ("cnn", "resnet18")

_PURPOSE_INIT = 0xE101
_PURPOSE_SHUFFLE = 0xE102
_PURPOSE_AUGMENT = 0xE103

TRAIN_BATCH_SIZE = 128
TRAIN_LR = 1e-3


class SmallCNN(nn.Module):
    """Four conv layers and a 128-d penultimate layer: trains on CIFAR-10 in about a minute an epoch on a CPU."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, feature_dim: int = 128):
        super().__init__()

        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(*block(in_channels, width, 1), *block(width, 2 * width, 2),
                                  *block(2 * width, 4 * width, 2), *block(4 * width, 4 * width, 2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4 * width, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18 (3x3 stem, no max-pool), 512-d penultimate features: the paper profile's classifier."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        layers = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(512, num_classes)
        self.feature_dim = 512

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_classifier(arch: str, num_classes: int, init_seed: int) -> nn.Module:
    """A freshly initialised classifier; its initial weights depend only on `init_seed`."""
    if arch not in CLASSIFIER_ARCHS:
        raise unknown_name("classifier architecture", arch, CLASSIFIER_ARCHS)
    # Seed the initialisation without touching the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return SmallCNN(num_classes) if arch == "cnn" else ResNet18(num_classes)


def to_rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x C x H x W with C in {1, 3} -> N x 3 x H x W (grayscale repeated), as torch-fidelity expects."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(f"expected uint8 N x C x H x W images, got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] == 3:
        return images
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")


def classifier_input(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """What every classifier of the suite sees: 3-channel float in [-1, 1]."""
    return to_model_range(to_rgb_uint8(images_u8).to(device, non_blocking=True))


def random_crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Per-sample random translation (reflect padding) and horizontal flip, drawn from `g`."""
    n, c, h, w = x.shape
    padded = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect").to(x.dtype)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flip:
        mask = torch.rand(n, generator=g) < 0.5
        out[mask] = out[mask].flip(-1)
    return out


@torch.no_grad()
def predict_logits(model: nn.Module, images_u8: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    model.eval()
    out = [model(classifier_input(images_u8[i:i + batch_size], device)).float().cpu()
           for i in range(0, len(images_u8), batch_size)]
    return torch.cat(out) if out else torch.empty(0, 0)


def accuracy(model: nn.Module, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int,
             device: torch.device) -> float:
    if len(labels) == 0:
        return float("nan")
    pred = predict_logits(model, images_u8, batch_size, device).argmax(1)
    return float((pred == labels.cpu()).double().mean())


def _data_fingerprint(stream: Stream) -> str:
    """Short hash of the training set, so two streams over different subsets of one data set never share a file."""
    data = stream.train_union(stream.num_tasks - 1)
    h = hashlib.sha256(f"{stream.dataset}|{stream.num_classes}|{tuple(stream.image_shape)}".encode())
    h.update(data.labels.numpy().tobytes())
    h.update(data.images.contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def classifier_version(stream: Stream, arch: str, epochs: int, seed: int) -> str:
    if arch not in CLASSIFIER_ARCHS:
        raise unknown_name("classifier architecture", arch, CLASSIFIER_ARCHS)
    return f"{arch}-e{epochs}-s{seed}-{CLASSIFIER_CODE_VERSION}-d{_data_fingerprint(stream)}"


def classifier_paths(cache_dir: pathlib.Path, dataset: str, version: str) -> tuple[pathlib.Path, pathlib.Path]:
    base = pathlib.Path(cache_dir) / "evaluators" / f"{dataset}-{version}"
    return base.with_name(base.name + ".pt"), base.with_name(base.name + ".json")


def _fit(model: nn.Module, stream: Stream, epochs: int, seed: int, device: torch.device, progress: bool) -> None:
    data = stream.train_union(stream.num_tasks - 1)
    n = len(data)
    steps_per_epoch = math.ceil(n / TRAIN_BATCH_SIZE)
    total = max(1, epochs * steps_per_epoch)
    opt = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
    # Cosine decay gets most of the accuracy a long schedule would in the few epochs a CPU can afford.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    # Horizontal flips suit natural images, not digits or letters (single-channel data sets).
    flip = stream.image_shape[0] == 3
    model.train()
    with tqdm(total=total, desc="evaluation classifier", unit="batch", disable=not progress, leave=False) as bar:
        for epoch in range(epochs):
            order = torch.randperm(n, generator=generator(seed, epoch, _PURPOSE_SHUFFLE))
            g_aug = generator(seed, epoch, _PURPOSE_AUGMENT)
            for start in range(0, n, TRAIN_BATCH_SIZE):
                idx = order[start:start + TRAIN_BATCH_SIZE]
                x = random_crop_flip(data.images[idx], g_aug, flip=flip)
                loss = F.cross_entropy(model(classifier_input(x, device)), data.labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()


def train_evaluation_classifier(stream: Stream, settings, cache_dir: pathlib.Path, device: torch.device,
                                seed: int = EVALUATION_CLASSIFIER_SEED, progress: bool = True,
                                retrain: bool = False) -> tuple[nn.Module, dict]:
    """The evaluation classifier of `stream.dataset` for `settings.classifier_arch` / `classifier_epochs`.

    Loaded from `cache_dir / "evaluators"` when present (unless `retrain`), otherwise trained on the training images
    of all classes of the stream, tested on all its test images, and saved (state dict + JSON with the accuracy).
    Returns (model in eval mode on `device`, info dict).
    """
    device = torch.device(device)
    arch, epochs = settings.classifier_arch, int(settings.classifier_epochs)
    version = classifier_version(stream, arch, epochs, seed)
    weights_path, info_path = classifier_paths(cache_dir, stream.dataset, version)
    model = build_classifier(arch, stream.num_classes, derive_seed(seed, _PURPOSE_INIT))
    if not retrain and weights_path.exists() and info_path.exists():
        import json
        model.load_state_dict(load_tensors(weights_path))
        info = json.loads(info_path.read_text())
        return model.to(device).eval(), info
    if epochs < 1:
        raise UserError(f"classifier_epochs must be >= 1, got {epochs}")
    print(f"cldiff-bench: training the evaluation classifier for {stream.dataset!r} ({arch}, {epochs} epochs); "
          f"done once, then cached under {pathlib.Path('evaluators') / weights_path.name}", file=sys.stderr)
    model.to(device)
    start = time.perf_counter()
    _fit(model, stream, epochs, seed, device, progress)
    seconds = time.perf_counter() - start
    test = stream.test_seen(stream.num_tasks - 1)
    info = {"version": version, "arch": arch, "epochs": epochs, "seed": seed, "dataset": stream.dataset,
            "num_classes": stream.num_classes, "code_version": CLASSIFIER_CODE_VERSION,
            "num_train": len(stream.train_union(stream.num_tasks - 1)), "num_test": len(test),
            "test_accuracy": accuracy(model, test.images, test.labels, 500, device),
            "train_seconds": round(seconds, 3), "file": weights_path.name}
    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights_path)
    atomic_write_json(info_path, info)
    return model.eval(), info
