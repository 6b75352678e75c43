"""The pinned rulers: the evaluation classifiers that score the built-in profiles, shipped with the package and
named here by the sha256 of their weights, as torch-fidelity pins its Inception.

A ruler's recipe does not fix its weights: trained again on another processor it is another network, whose
features give FIDs 10 or more apart. So every machine scores with these files and never trains a built-in ruler
itself; `cldiff-bench train-evaluator` makes a new one explicitly, which results record by its own digest and
boards keep apart. To pin a new ruler: train it (`train-evaluator --retrain`), copy its .pt and .json into
`rulers/`, and add its file name and sha256 below; each file's record (the .json) has its accuracies.
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from ..errors import UserError

RULERS_DIR = Path(__file__).with_name("rulers")

# File name (data set and classifier version, `classifier.classifier_paths`) -> sha256 of the weights file.
PINNED = {
    # fmnist-5 at the cpu profile (16 x 16): the network that scored the published board.
    "fashion-mnist@16px-ruler-cnn-e15-h17-f-s0-c2-r54eeb3-d9670c582b1.pt":
        "598219edaf4dc7c69c36ad267bbc50184e9e0d94616875c017f1814ebb946b03",
    # digits-5 at the tiny and small profiles (32 x 32) and at the cpu profile (16 x 16): the tests, CI and first runs.
    "sklearn-digits-ruler-cnn-e12-h17-s0-c2-r54eeb3-dc2920769df.pt":
        "275219679717c6a147f2e71ce7e7617455d37415a522d643dc42b8e85449a730",
    "sklearn-digits@16px-ruler-cnn-e12-h17-s0-c2-r54eeb3-d8122297469.pt":
        "26f48514e49d91332c463cbf97458d72c85632fdaea4b4bd412f283267288751",
    # cifar10-5 at 32 x 32 (the tiny and small profiles; the cpu profile's budget for CIFAR-10 is not calibrated
    # yet): a quarter-width ResNet-9, 15 epochs, test accuracy 0.864.
    "cifar-10-ruler-resnet-e15-h10-f-s0-c2-r5dabf1-dab697d04cf.pt":
        "2c07d9cb70604ef0525eb3e70c9fae174492c57eb39df9c4276fda2d2be789b5",
}


def pinned_file(name: str) -> Path | None:
    """The pinned weights file of this name, checked against its digest; None when no ruler of that name is
    pinned. A missing, truncated or altered file is a one-line error that says how to restore it."""
    expected = PINNED.get(name)
    if expected is None:
        return None
    path = RULERS_DIR / name
    restore = "reinstall the package (pip install --force-reinstall --no-deps cldiff-bench, or git checkout in a " \
              "checkout) to restore it"
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise UserError(f"the pinned evaluation classifier {path} (sha256 {expected}) is missing; {restore}")
    actual = file_sha256(path)
    if actual != expected:
        raise UserError(f"the pinned evaluation classifier {path} is altered or truncated: its sha256 is {actual}, "
                        f"expected {expected}; {restore}")
    return path


def file_sha256(path: Path) -> str:
    stat = Path(path).stat()
    return _sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
