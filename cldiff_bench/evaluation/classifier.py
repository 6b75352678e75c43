"""The evaluation classifier: one per data set, trained by the suite, shared by every run that evaluates on it.

It labels generated samples (for KLD / ARD) and, with the `classifier` extractor, provides the FID features. It is
trained with a fixed suite seed on the data set's training images in a canonical order (by class, as stored), so
runs of every seed and class order are scored by the same network; its version string names everything that
changes the weights, and is part of every cache key that depends on it.

A fixed share of each class's training images is held out: the classifier keeps its best epoch on them (as the
study's recipe does), and `cldiff-bench oracle` scores them as if they were generated, the metrics' floor.

Recipes:
* `resnet18-imagenet` (paper profile): the study's train_kld_classifier.py: torchvision's ResNet-18 from ImageNet
  weights, Adam 5e-4, batch 64, random flip, rotation (10 degrees), translation (10%) and Gaussian noise (0.1),
  100 epochs, the best epoch on the held-out images.
* `ruler-cnn` (CPU profiles): the same augmentations on a small CNN with a cosine learning-rate decay, so a ruler that
  is robust to what generators draw (blur, speckle, shifted shapes) trains in minutes.
"""
from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import math
import pathlib
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.seeding import derive_seed, generator, keyed_global_rng
from ..errors import UserError, unknown_name
from ..io import atomic_torch_save, atomic_write_json, load_tensors
from ..streams.base import ImageSet, Stream, to_model_range
from .networks import build_network, imagenet_resnet18_weights
from .pinned_rulers import file_sha256, pinned_file

# Bump when the architecture, the training recipe or the preprocessing changes: it invalidates cached classifiers.
CLASSIFIER_CODE_VERSION = "c2"
# The evaluation classifier of a data set is the same for every run (see the module docstring).
EVALUATION_CLASSIFIER_SEED = 0
CLASSIFIER_ARCHS = ("ruler-cnn", "ruler-resnet", "resnet18-imagenet")

_PURPOSE_INIT = 0xE101
_PURPOSE_SHUFFLE = 0xE102
_PURPOSE_AUGMENT = 0xE103
_PURPOSE_HOLDOUT = 0xE104
_PURPOSE_DROPOUT = 0xE105


@dataclass(frozen=True)
class Recipe:
    batch_size: int
    lr: float
    lr_schedule: str            # "constant" | "cosine"
    rotation_degrees: float
    translate: float            # largest shift, as a fraction of the image size
    noise_std: float            # Gaussian noise added in the [-1, 1] input range
    pretrained: str | None      # "imagenet" or None
    # What generators get wrong, for a ruler of generated images: each image gets its own noise level (uniform up
    # to noise_std instead of exactly noise_std), a lifted or dimmed background (brightness: largest shift;
    # contrast: largest relative loss), and a blur (up to this share of a 3x3 box blur mixed in).
    noise_per_image: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    blur: float = 0.0
    # The optimiser: Adam (the study's), or SGD with Nesterov momentum and weight decay, which trains the deeper
    # CIFAR-10 ruler further in the epochs a CPU affords; a linear warm-up over the first epochs; label smoothing.
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    # Channels-last convolutions: 1.3x faster training of the CIFAR-10 ruler on a CPU. Off for the small CNN, whose
    # pinned rulers were trained without it.
    channels_last: bool = False

    def to_dict(self) -> dict:
        """The recipe as its version hashes it: the fields added after rulers were published are left out while
        they hold their defaults, so those rulers keep their versions."""
        out = asdict(self)
        del out["channels_last"]  # a speed setting: it changes rounding, not what the recipe is
        for name in LATER_FIELDS:
            if out[name] == getattr(Recipe, name):
                del out[name]
        return out


LATER_FIELDS = ("optimizer", "momentum", "weight_decay", "warmup_epochs", "label_smoothing")


RECIPES = {
    "resnet18-imagenet": Recipe(batch_size=64, lr=5e-4, lr_schedule="constant", rotation_degrees=10.0,
                                translate=0.1, noise_std=0.1, pretrained="imagenet"),
    # Milder geometry than the study's (its 10 degrees and 10% cost a small CNN 3 points in the few epochs a CPU
    # affords), and the artefacts of few-step samples: speckle, grey backgrounds, blur. Trained on clean images
    # only, a CNN labelled a model's clear coats and trousers as shirts and pullovers.
    "ruler-cnn": Recipe(batch_size=128, lr=2e-3, lr_schedule="cosine", rotation_degrees=5.0, translate=0.0625,
                        noise_std=0.35, pretrained=None, noise_per_image=True, brightness=0.4, contrast=0.4,
                        blur=1.0),
    # Natural images: crops of up to 4 pixels (at 32 x 32) and flips as every CIFAR-10 recipe has, and milder
    # artefacts than the grayscale ruler's (noise, grey, blur at about half): at the grayscale strengths the
    # colour cues a CIFAR class depends on drown.
    "ruler-resnet": Recipe(batch_size=128, lr=0.1, lr_schedule="cosine", rotation_degrees=5.0, translate=0.125,
                           noise_std=0.2, pretrained=None, noise_per_image=True, brightness=0.2, contrast=0.2,
                           blur=0.5, optimizer="sgd", momentum=0.9, weight_decay=5e-4, warmup_epochs=1.0,
                           label_smoothing=0.1, channels_last=True),
}


def build_classifier(arch: str, num_classes: int, init_seed: int, weights_file: str | None = None) -> nn.Module:
    """A freshly initialised evaluation classifier (the ImageNet body loaded for `resnet18-imagenet`)."""
    if arch not in CLASSIFIER_ARCHS:
        raise unknown_name("classifier architecture", arch, CLASSIFIER_ARCHS)
    pretrained = imagenet_resnet18_weights(weights_file) if RECIPES[arch].pretrained == "imagenet" else None
    return build_network(arch, num_classes, init_seed, pretrained=pretrained)


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


def augment(x: torch.Tensor, g: torch.Generator, recipe: Recipe, flip: bool) -> torch.Tensor:
    """Per-sample random rotation and translation (black fill, as torchvision's), flip, then Gaussian noise; the
    draws come from `g` on the CPU, so they do not depend on the device."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(recipe.rotation_degrees)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (2 * recipe.translate)  # grid units span 2 per image side
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    # Shifted by +1 so that grid_sample's zero padding is black (-1) once shifted back.
    out = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1
    mirror = torch.rand(n, generator=g) < 0.5
    if flip:
        out = torch.where(mirror.to(x.device)[:, None, None, None], out.flip(-1), out)
    per_image = (lambda: torch.rand(n, 1, 1, 1, generator=g).to(out.device, out.dtype))
    if recipe.blur:
        blurred = F.avg_pool2d(out, 3, stride=1, padding=1, count_include_pad=False)
        out = torch.lerp(out, blurred, recipe.blur * per_image())
    if recipe.contrast or recipe.brightness:
        # Scaled towards white and shifted up: a black background turns grey, as in undertrained samples.
        scale = 1 - recipe.contrast * per_image()
        out = ((out + 1) * scale - 1 + 2 * recipe.brightness * per_image()).clamp(-1, 1)
    std = recipe.noise_std * (per_image() if recipe.noise_per_image else 1.0)
    noise = torch.randn(out.shape, generator=g).to(out.device, out.dtype)
    return out + noise * std


def canonical_train_set(stream: Stream) -> ImageSet:
    """All training images of the stream ordered by class (each class in stored order): the same for every split."""
    union = stream.train_union(stream.num_tasks - 1)
    return ImageSet.concat([union.of_classes([c]) for c in range(stream.num_classes)])


def holdout_split(stream: Stream, fraction: float) -> tuple[ImageSet, ImageSet]:
    """(training images, held-out images): `fraction` of every class, chosen by a keyed draw per class."""
    data = canonical_train_set(stream)
    keep, held = [], []
    for c in range(stream.num_classes):
        idx = torch.nonzero(data.labels == c).flatten()
        perm = idx[torch.randperm(len(idx), generator=generator(_PURPOSE_HOLDOUT, c))]
        n_held = int(round(fraction * len(idx)))
        held.append(perm[:n_held].sort().values)
        keep.append(perm[n_held:].sort().values)
    keep, held = torch.cat(keep), torch.cat(held)
    return (ImageSet(data.images[keep], data.labels[keep]), ImageSet(data.images[held], data.labels[held]))


def _data_fingerprint(stream: Stream) -> str:
    """Short hash of the training set, so two streams over different subsets of one data set never share a file.
    Kept on the stream: preflight, training and every result's description ask for it, and it reads every image."""
    cached = getattr(stream, "_classifier_data_fingerprint", None)
    if cached is None:
        cached = _hash_training_set(stream)
        stream._classifier_data_fingerprint = cached
    return cached


def _hash_training_set(stream: Stream) -> str:
    data = canonical_train_set(stream)
    h = hashlib.sha256(f"{stream.dataset}|{stream.num_classes}|{tuple(stream.image_shape)}".encode())
    h.update(data.labels.numpy().tobytes())
    h.update(data.images.contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def _weights_tag(arch: str, weights_file: str | None) -> str:
    if RECIPES[arch].pretrained is None:
        return ""
    if weights_file:
        path = pathlib.Path(weights_file).expanduser()
        if not path.is_file():
            return "-wmissing"
        return f"-w{file_sha256(path)[:8]}"
    return "-wtv1"  # torchvision's IMAGENET1K_V1


def classifier_version(stream: Stream, arch: str, epochs: int, seed: int, holdout: float = 0.0,
                       flip: bool = False, weights_file: str | None = None) -> str:
    if arch not in CLASSIFIER_ARCHS:
        raise unknown_name("classifier architecture", arch, CLASSIFIER_ARCHS)
    recipe = hashlib.sha256(json.dumps(RECIPES[arch].to_dict(), sort_keys=True).encode()).hexdigest()[:6]
    return (f"{arch}-e{epochs}-h{round(100 * holdout)}{'-f' if flip else ''}{_weights_tag(arch, weights_file)}"
            f"-s{seed}-{CLASSIFIER_CODE_VERSION}-r{recipe}-d{_data_fingerprint(stream)}")


def classifier_paths(cache_dir: pathlib.Path, dataset: str, version: str) -> tuple[pathlib.Path, pathlib.Path]:
    base = pathlib.Path(cache_dir) / "evaluators" / f"{dataset}-{version}"
    return base.with_name(base.name + ".pt"), base.with_name(base.name + ".json")


def _lr_factor(recipe: Recipe, total: int, per_epoch: int):
    warmup = int(recipe.warmup_epochs * per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if recipe.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))
        return 1.0
    return factor


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, nesterov=True,
                               weight_decay=recipe.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def _fit(model: nn.Module, train: ImageSet, held: ImageSet, recipe: Recipe, epochs: int, seed: int, flip: bool,
         device: torch.device, progress: bool) -> dict:
    n = len(train)
    bs = recipe.batch_size
    per_epoch = math.ceil(n / bs)
    total = max(1, epochs * per_epoch)
    opt = _optimizer(model, recipe)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(recipe, total, per_epoch))
    if recipe.channels_last:
        model.to(memory_format=torch.channels_last)  # the saved weights are made contiguous again
    best = {"epoch": None, "holdout_accuracy": -1.0}
    best_state = None
    with tqdm(total=total, desc="evaluation classifier", unit="batch", disable=not progress, leave=False) as bar:
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(n, generator=generator(seed, epoch, _PURPOSE_SHUFFLE))
            g_aug = generator(seed, epoch, _PURPOSE_AUGMENT)
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                x = augment(classifier_input(train.images[idx], device), g_aug, recipe, flip)
                if recipe.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                loss = F.cross_entropy(model(x), train.labels[idx].to(device), label_smoothing=recipe.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if len(held):
                acc = accuracy(model, held.images, held.labels, 500, device)
                if progress:
                    tqdm.write(f"evaluation classifier: epoch {epoch + 1}/{epochs}, held-out accuracy {acc:.4f}")
                # The study keeps the best epoch on its validation split; ties keep the later (longer-trained) one.
                if acc >= best["holdout_accuracy"]:
                    best = {"epoch": epoch + 1, "holdout_accuracy": acc}
                    best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best = {"epoch": epochs, "holdout_accuracy": None}
    model.eval()
    return best


def classifier_identity(stream: Stream, settings) -> str:
    return classifier_version(stream, settings.classifier_arch, int(settings.classifier_epochs),
                              EVALUATION_CLASSIFIER_SEED, settings.classifier_holdout, settings.classifier_flip,
                              settings.classifier_weights)


@dataclass(frozen=True)
class RulerFiles:
    weights: pathlib.Path
    info: pathlib.Path | None
    origin: str  # "pinned" (shipped with the suite), "local" (made here by train-evaluator) or "file" (--ruler)


def ruler_files(stream: Stream, settings, cache_dir: pathlib.Path) -> RulerFiles:
    """Where the ruler that scores runs with `settings` lies, checked: the file given as --ruler; else the pinned
    network of this data set and settings (pinned_rulers.py); else one that `train-evaluator` made here. Nothing
    is ever trained on the way: a missing ruler is a one-line error that says how to make one."""
    if settings.ruler_file:
        path = pathlib.Path(settings.ruler_file).expanduser()
        if not path.is_file():
            raise UserError(f"--ruler {settings.ruler_file}: no such file")
        info = path.with_suffix(".json")
        return RulerFiles(path, info if info.is_file() else None, "file")
    weights, info = classifier_paths(cache_dir, stream.dataset, classifier_identity(stream, settings))
    pinned = pinned_file(weights.name)
    if pinned is not None:
        return RulerFiles(pinned, pinned.with_suffix(".json"), "pinned")
    if weights.is_file() and info.is_file():
        return RulerFiles(weights, info, "local")
    raise UserError(f"no evaluation classifier for {stream.dataset!r} at these settings ({weights.stem}): none is "
                    f"pinned for them; make one with `cldiff-bench train-evaluator --stream {stream.name} --profile "
                    f"PROFILE` (this run's profile; results scored by it are kept apart from the published boards)")


def classifier_is_cached(stream: Stream, settings, cache_dir: pathlib.Path) -> bool:
    """Whether the ruler of `settings` is at hand (pinned, or made here), so nothing has to train it."""
    try:
        ruler_files(stream, settings, cache_dir)
    except UserError:
        return False
    return True


def ruler_record(stream: Stream, settings, cache_dir: pathlib.Path) -> dict:
    """What a result records of its ruler without loading the network: its record, digest and origin."""
    try:
        files = ruler_files(stream, settings, cache_dir)
    except UserError:
        return {"version": classifier_identity(stream, settings), "status": "not at hand"}
    return ruler_record_of(files)


def ruler_record_of(files: RulerFiles) -> dict:
    info = json.loads(files.info.read_text()) if files.info is not None else {"version": f"file {files.weights.name}"}
    return {**info, "weights_sha256": weights_digest(files.weights), "origin": files.origin}


def load_evaluation_classifier(stream: Stream, settings, cache_dir: pathlib.Path,
                               device: torch.device) -> tuple[nn.Module, dict]:
    """The ruler that scores runs (see ruler_files), in eval mode on `device`, and its record: the version, the
    weights' digest and where it came from."""
    files = ruler_files(stream, settings, cache_dir)
    return _load(settings.classifier_arch, stream, files, torch.device(device))


def train_evaluation_classifier(stream: Stream, settings, cache_dir: pathlib.Path, device: torch.device,
                                seed: int = EVALUATION_CLASSIFIER_SEED, progress: bool = True,
                                retrain: bool = False) -> tuple[nn.Module, dict]:
    """`cldiff-bench train-evaluator`: make the evaluation classifier of `stream.dataset` for `settings`
    (classifier_arch, _epochs, _holdout, _flip, _weights) where none is at hand, or again with `retrain`.

    Trained on the held-in training images of all classes, tested on all test images, and saved into
    `cache_dir / "evaluators"` (state dict + JSON with the accuracies). A pinned ruler is returned as it is unless
    `retrain`; a retrained one lies in the cache and scores runs only when named (--ruler), since its digest is
    another network's. Returns (model in eval mode on `device`, info dict).
    """
    device = torch.device(device)
    arch, epochs = settings.classifier_arch, int(settings.classifier_epochs)
    if arch not in CLASSIFIER_ARCHS:
        raise unknown_name("classifier architecture", arch, CLASSIFIER_ARCHS)
    if not retrain and classifier_is_cached(stream, settings, cache_dir):
        return load_evaluation_classifier(stream, settings, cache_dir, device)
    version = classifier_version(stream, arch, epochs, seed, settings.classifier_holdout, settings.classifier_flip,
                                 settings.classifier_weights)
    weights_path, info_path = classifier_paths(cache_dir, stream.dataset, version)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    # Two processes asked to make the same classifier train it once: the other waits for it and loads it.
    with open(weights_path.with_name(weights_path.name + ".lock"), "a") as lock:
        if not _try_lock(lock):
            print(f"cldiff-bench: waiting for another process to finish training the evaluation classifier "
                  f"({weights_path.name})", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
            return _load(arch, stream, RulerFiles(weights_path, info_path, "local"), device)
        return _train_and_cache(stream, settings, arch, epochs, seed, version, weights_path, info_path, device,
                                progress)


def _try_lock(handle) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _load(arch: str, stream: Stream, files: RulerFiles, device: torch.device) -> tuple[nn.Module, dict]:
    # The saved weights replace the initial ones, ImageNet body included: no pretrained file is needed.
    model = build_network(arch, stream.num_classes, derive_seed(EVALUATION_CLASSIFIER_SEED, _PURPOSE_INIT))
    state = load_tensors(files.weights)
    try:
        model.load_state_dict(state)
    except (RuntimeError, AttributeError, TypeError) as exc:
        raise UserError(f"{files.weights} is not a {arch} evaluation classifier of {stream.num_classes} classes "
                        f"({str(exc).splitlines()[0][:160]})") from None
    return model.to(device).eval(), ruler_record_of(files)


def weights_digest(path: pathlib.Path) -> str:
    """The classifier's weights by content. Its version names the recipe and the data, but the same recipe
    trained on another processor (other vector units, other rounding) is another network with other features and
    labels, so results record which one scored them and a board never ranks results of two together."""
    return file_sha256(path)[:16]


def _train_and_cache(stream: Stream, settings, arch: str, epochs: int, seed: int, version: str,
                     weights_path: pathlib.Path, info_path: pathlib.Path, device: torch.device,
                     progress: bool) -> tuple[nn.Module, dict]:
    if epochs < 1:
        raise UserError(f"classifier_epochs must be >= 1, got {epochs}")
    recipe = RECIPES[arch]
    model = build_classifier(arch, stream.num_classes, derive_seed(seed, _PURPOSE_INIT), settings.classifier_weights)
    train, held = holdout_split(stream, settings.classifier_holdout)
    print(f"cldiff-bench: training the evaluation classifier for {stream.dataset!r} ({arch}, {epochs} epochs on "
          f"{len(train)} images); done once, then cached under {pathlib.Path('evaluators') / weights_path.name}",
          file=sys.stderr)
    model.to(device)
    start = time.perf_counter()
    with keyed_global_rng(device, seed, _PURPOSE_DROPOUT):
        best = _fit(model, train, held, recipe, epochs, seed, settings.classifier_flip, device, progress)
    seconds = time.perf_counter() - start
    test = stream.test_seen(stream.num_tasks - 1)
    pred = predict_logits(model, test.images, 500, device).argmax(1)
    per_class = [float((pred[test.labels == c] == c).double().mean()) for c in range(stream.num_classes)]
    info = {"version": version, "arch": arch, "epochs": epochs, "seed": seed, "dataset": stream.dataset,
            "num_classes": stream.num_classes, "code_version": CLASSIFIER_CODE_VERSION, "recipe": recipe.to_dict(),
            "flip": settings.classifier_flip, "holdout_fraction": settings.classifier_holdout,
            "num_train": len(train), "num_holdout": len(held), "num_test": len(test),
            "best_epoch": best["epoch"], "holdout_accuracy": best["holdout_accuracy"],
            "test_accuracy": float((pred == test.labels).double().mean()),
            "test_accuracy_per_class": per_class, "train_seconds": round(seconds, 3), "file": weights_path.name}
    atomic_torch_save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, weights_path)
    atomic_write_json(info_path, info)
    info.update(weights_sha256=weights_digest(weights_path), origin="local")
    return model.eval(), info
