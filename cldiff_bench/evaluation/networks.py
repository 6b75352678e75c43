"""The classifier networks of the evaluation: the KLD/FID ruler of the CPU profiles, the study's ResNet-18, and the
study's SimpleCNN solver. Every one exposes `features(x)` (penultimate) and `head`, as the FID extractor needs."""
from __future__ import annotations

import hashlib
import pathlib

import torch
from torch import nn

from ..errors import UserError, unknown_name

# The file torchvision downloads for ResNet18_Weights.IMAGENET1K_V1 (what the study's `resnet18(pretrained=...)` loads),
# and the start of its sha256 as torchvision publishes it (in the file's name) and checks it after a download.
IMAGENET_RESNET18_FILE = "resnet18-f37072fd.pth"
IMAGENET_RESNET18_SHA256_PREFIX = "f37072fd"


class RulerCNN(nn.Module):
    """The CPU profiles' evaluation classifier: two 3x3 convolutions per resolution (32, 16, 8), BatchNorm, dropout
    before the head. Big enough to reach the accuracy of the usual Fashion-MNIST CNNs (92-94%) in a few CPU
    minutes, small enough to train once per data set on two cores."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, feature_dim: int = 128):
        super().__init__()

        def conv(cin, cout, stride=1):
            return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.body = nn.Sequential(*conv(in_channels, w), *conv(w, w),
                                  *conv(w, 2 * w, 2), *conv(2 * w, 2 * w),
                                  *conv(2 * w, 4 * w, 2), *conv(4 * w, 4 * w),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(4 * w, feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class RulerResNet(nn.Module):
    """The CIFAR-10 ruler: a quarter-width ResNet-9 (Page's DAWNBench network at widths 32/64/128/256): a stem, three
    stages that double the width and halve the resolution, residual pairs after the first and the last. Natural
    images need the depth and width a 6-layer CNN lacks (0.6 test accuracy on CIFAR-10); about 96M multiply-adds
    per 32 x 32 image, trained once and shipped."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, feature_dim: int = 256):
        super().__init__()

        def conv(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        w = width
        self.stem = conv(in_channels, w)
        self.stage1 = nn.Sequential(conv(w, 2 * w), nn.MaxPool2d(2))
        self.res1 = nn.Sequential(conv(2 * w, 2 * w), conv(2 * w, 2 * w))
        self.stage2 = nn.Sequential(conv(2 * w, 4 * w), nn.MaxPool2d(2))
        self.stage3 = nn.Sequential(conv(4 * w, 8 * w), nn.MaxPool2d(2))
        self.res3 = nn.Sequential(conv(8 * w, 8 * w), conv(8 * w, 8 * w))
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(8 * w, num_classes)
        self.feature_dim = 8 * w

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.stem(x))
        x = x + self.res1(x)
        x = self.stage3(self.stage2(x))
        return self.pool(x + self.res3(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCNN(nn.Module):
    """The CPU profiles' solver: four BatchNorm conv layers, a 128-d penultimate layer; learns quickly from the few
    images a CPU profile gives it."""

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


class SimpleCNN(nn.Module):
    """The study's solver network (its src/models/simple_cnn.py): four 3x3 convolutions with ReLU, two max-pools,
    dropout 0.25, a 1x1 convolution, global max-pool and one linear layer. It reads the data set's own channels:
    the suite feeds classifiers 3-channel input, and for grayscale data the channels are copies."""

    def __init__(self, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.in_channels = in_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=0), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2), nn.Dropout(0.25),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(64, 128, 3, padding=0), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2), nn.Dropout(0.25),
            nn.Conv2d(128, 128, 1, padding=0), nn.ReLU(inplace=True),
            nn.AdaptiveMaxPool2d(1), nn.Dropout(0.25), nn.Flatten())
        self.head = nn.Linear(128, num_classes)
        self.feature_dim = 128

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x[:, :self.in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ImageNetResNet18(nn.Module):
    """torchvision's ResNet-18 (7x7 stem and max-pool, as the study uses it on 32x32 images) with a new linear head;
    the body starts from ImageNet weights when `pretrained` is given."""

    def __init__(self, num_classes: int, pretrained: dict | None = None):
        super().__init__()
        from torchvision.models import resnet18
        net = resnet18(weights=None)
        if pretrained is not None:
            try:
                net.load_state_dict(pretrained)
            except RuntimeError as exc:
                raise UserError(f"the ResNet-18 weights do not fit torchvision's resnet18: {str(exc).splitlines()[0]}")
        net.fc = nn.Identity()
        self.net = net
        self.head = nn.Linear(512, num_classes)
        self.feature_dim = 512

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


NETWORKS = {"ruler-cnn": RulerCNN, "ruler-resnet": RulerResNet, "resnet18-imagenet": ImageNetResNet18,
            "small-cnn": SmallCNN,
            "simple-cnn": SimpleCNN}


def build_network(arch: str, num_classes: int, init_seed: int, in_channels: int = 3,
                  pretrained: dict | None = None) -> nn.Module:
    """A freshly initialised network; its random weights depend only on `init_seed`."""
    if arch not in NETWORKS:
        raise unknown_name("classifier architecture", arch, NETWORKS)
    # Seed the initialisation without touching the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if arch == "resnet18-imagenet":
            return ImageNetResNet18(num_classes, pretrained)
        if arch == "simple-cnn":
            return SimpleCNN(num_classes, in_channels)
        return NETWORKS[arch](num_classes)


def imagenet_resnet18_weights(weights_file: str | None) -> dict:
    """The ImageNet ResNet-18 state dict: from `weights_file`, else torchvision's (its cache, else a download)."""
    if weights_file:
        path = pathlib.Path(weights_file).expanduser()
        if not path.is_file():
            raise UserError(f"--classifier-weights {weights_file}: no such file")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(IMAGENET_RESNET18_SHA256_PREFIX):
            raise UserError(f"--classifier-weights {weights_file} is not torchvision's {IMAGENET_RESNET18_FILE}: its "
                            f"sha256 starts {digest[:8]}, torchvision's {IMAGENET_RESNET18_SHA256_PREFIX}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"--classifier-weights {weights_file} is not a readable torch state dict "
                            f"({type(exc).__name__})") from exc
        if not isinstance(state, dict) or "conv1.weight" not in state:
            raise UserError(f"--classifier-weights {weights_file} is not a torchvision resnet18 state dict")
        return state
    from torchvision.models import ResNet18_Weights
    try:
        return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:
        hub = pathlib.Path(torch.hub.get_dir()) / "checkpoints"
        raise UserError(
            f"the paper profile's KLD classifier starts from torchvision's ImageNet ResNet-18 weights, which could not "
            f"be loaded ({type(exc).__name__}); on a machine with internet they download on first use; otherwise "
            f"pass --classifier-weights FILE (torchvision's {IMAGENET_RESNET18_FILE}) or put that file in "
            f"{hub}") from exc


def imagenet_resnet18_available(weights_file: str | None) -> bool:
    """Whether the ImageNet weights are at hand without a download (a given file, or torchvision's cache)."""
    if weights_file:
        return pathlib.Path(weights_file).expanduser().is_file()
    return (pathlib.Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_RESNET18_FILE).is_file()
