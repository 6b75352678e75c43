import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cldiff_bench.errors import DataNotFoundError
from cldiff_bench.registry import load_registry
from cldiff_bench.streams import datasets
from cldiff_bench.streams.split import avalanche_class_split


class LabelledDataset(torch.utils.data.Dataset):
    """Ten classes of blank images: all Avalanche's class-order logic looks at is `targets`."""

    def __init__(self, per_class=3, shape=(1, 28, 28)):
        self.targets = [c for c in range(10) for _ in range(per_class)]
        self.shape = shape

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return torch.zeros(self.shape), self.targets[i]


@pytest.mark.parametrize("module,getter,factory", [
    ("avalanche.benchmarks.classic.cfashion_mnist", "get_fmnist_dataset", "SplitFMNIST"),
    ("avalanche.benchmarks.classic.ccifar10", "get_cifar10_dataset", "SplitCIFAR10"),
])
@pytest.mark.parametrize("seed", [0, 1, 1234])
def test_class_order_equals_avalanche_split_benchmarks(monkeypatch, module, getter, factory, seed):
    import importlib
    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, getter, lambda root=None: (LabelledDataset(), LabelledDataset(1)))
    bench = getattr(mod, factory)(n_experiences=5, seed=seed)
    expected_order = list(bench.classes_order)
    expected_tasks = [sorted(exp.classes_in_this_experience) for exp in bench.train_stream]
    labels = torch.arange(10).repeat(3)
    order, per_task = avalanche_class_split(labels, labels, 5, seed)
    assert order == expected_order
    assert per_task == expected_tasks


def test_class_split_does_not_touch_the_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    avalanche_class_split(torch.arange(10), torch.arange(10), 5, seed=3)
    assert torch.equal(torch.rand(3), expected)


def test_digits_stream_needs_no_download(tmp_path):
    spec = load_registry().stream("digits-5")
    stream = spec.build(tmp_path / "nowhere", 0, tmp_path)
    assert stream.num_tasks == 5 and stream.image_shape == (1, 32, 32)
    assert sorted(stream.class_order) == list(range(10))
    seen = set()
    for task in stream.tasks:
        assert len(task.classes) == 2 and not seen & set(task.classes)
        seen |= set(task.classes)
        assert set(task.train.labels.tolist()) == set(task.classes) == set(task.test.labels.tolist())
        assert task.train.images.dtype == torch.uint8
    total = sum(len(t.train) + len(t.test) for t in stream.tasks)
    assert total == 1797
    assert len(stream.test_seen(1)) == len(stream.tasks[0].test) + len(stream.tasks[1].test)
    assert stream.tasks[0].train.images.max() > 200  # scaled from 0..16 to 0..255


def test_different_seeds_give_different_orders(tmp_path):
    spec = load_registry().stream("digits-5")
    assert spec.build(tmp_path, 0, tmp_path).class_order != spec.build(tmp_path, 1, tmp_path).class_order


def _write_idx(path: Path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_loader_reads_idx_files_and_resizes(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_labels = np.repeat(np.arange(10), 2)
    train_images = (train_labels[:, None, None] * 20 + np.zeros((1, 28, 28))).astype(np.uint8)  # constant images
    _write_idx(raw / "train-images-idx3-ubyte.gz", train_images)
    _write_idx(raw / "train-labels-idx1-ubyte.gz", train_labels)
    _write_idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (10, 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    train, test, names = datasets.load_fashion_mnist(tmp_path, download=False)
    assert train.images.shape == (20, 1, 32, 32) and test.images.shape == (10, 1, 32, 32)
    assert names[0] == "T-shirt/top"
    # a constant image stays constant through the resize
    assert torch.all(train.images[5] == int(train_labels[5]) * 20)
    assert train.labels.tolist() == train_labels.tolist()


def test_missing_fashion_mnist_names_the_files(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        datasets.load_fashion_mnist(tmp_path, download=False)
    message = str(info.value)
    for stem in datasets.FMNIST_FILES:
        assert stem + ".gz" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message


def _write_png_folder(root: Path, classes, per_split):
    from PIL import Image
    for split, n in per_split.items():
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((32, 32, 3), label * 20 + i, dtype=np.uint8)).save(folder / f"{i}.png")


def test_cifar10_image_folder_copy_is_accepted_and_cached(tmp_path):
    _write_png_folder(tmp_path / "cifar10", datasets.CIFAR10_CLASSES, {"train": 2, "test": 1})
    train, test, names = datasets.load_cifar10(tmp_path, tmp_path / "cache", download=False)
    assert names == datasets.CIFAR10_CLASSES
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 10
    # label = sorted folder index; pixel value encodes label * 20 + image index
    assert train.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert int(train.images[3, 0, 0, 0]) == 1 * 20 + 1
    assert list((tmp_path / "cache" / "datasets").glob("imagefolder-*.pt"))
    again, _, _ = datasets.load_cifar10(tmp_path, tmp_path / "cache", download=False)
    assert torch.equal(again.images, train.images)


def test_missing_cifar10_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        datasets.load_cifar10(tmp_path, None, download=False)


REAL_DATA = os.environ.get("CLDIFF_BENCH_REAL_DATA")


@pytest.mark.skipif(not REAL_DATA, reason="set CLDIFF_BENCH_REAL_DATA to a data root with FashionMNIST/raw to run")
def test_real_fashion_mnist_statistics():
    train, test, _ = datasets.load_fashion_mnist(Path(REAL_DATA), download=False)
    assert len(train) == 60000 and len(test) == 10000
    assert torch.bincount(train.labels).tolist() == [6000] * 10
