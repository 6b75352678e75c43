"""Loading the raw data sets as uint8 tensors at 32 x 32: bundled digits, Fashion-MNIST, CIFAR-10, image folders.

Real data sets are looked up under the data root; where torchvision can download them (a machine with internet)
it does; otherwise the error says exactly which files to put where.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataNotFoundError, UserError
from ..io import atomic_torch_save, load_tensors
from .base import ImageSet, resize_uint8

IMAGE_SIZE = 32
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}




# --- scikit-learn's bundled 8x8 digits: no download at all ---------------------------------------------------------

def load_digits(test_fraction: float = 0.2) -> tuple[ImageSet, ImageSet, list[str]]:
    """The 1,797 8x8 digits bundled with scikit-learn, split per class into train/test with a fixed seed
    (the split is part of the data set, not of a run, so every run evaluates on the same test images)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8))[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    rng = np.random.default_rng(0)
    test_mask = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(bunch.target == c)
        test_mask[rng.permutation(idx)[: int(round(len(idx) * test_fraction))]] = True
    images = resize_uint8(images, IMAGE_SIZE)
    mask = torch.from_numpy(test_mask)
    return (ImageSet(images[~mask], labels[~mask]), ImageSet(images[mask], labels[mask]),
            [str(i) for i in range(10)])


# --- Fashion-MNIST -------------------------------------------------------------------------------------------------

FMNIST_FILES = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot"]


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not; a truncated or corrupt file is named, with what to do."""
    fix = (f"delete it and download it again (the original files' md5s are {', '.join(FMNIST_FILES.values())}), "
           f"or run once with internet so torchvision fetches it")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UserError(f"{path} is truncated or corrupt ({type(exc).__name__}); {fix}") from None
    if len(data) < 4 or int.from_bytes(data[0:4], "big") >> 8 != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file; {fix}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) != offset + int(np.prod(dims)):
        raise UserError(f"{path} is truncated or corrupt ({len(data) - offset} bytes of data for an array of shape "
                        f"{dims}); {fix}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_fmnist(raw: Path) -> list[str]:
    return [stem for stem in FMNIST_FILES if _find_idx(raw, stem) is None]


def load_fashion_mnist(data_root: Path, download: bool = True) -> tuple[ImageSet, ImageSet, list[str]]:
    raw = Path(data_root) / "FashionMNIST" / "raw"
    if _missing_fmnist(raw) and download:
        try:
            import torchvision
            torchvision.datasets.FashionMNIST(str(data_root), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(data_root), train=False, download=True)
        except Exception as exc:  # offline, read-only root, ...: fall through to the explicit message
            download_error = f" (download failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        else:
            download_error = ""
    else:
        download_error = ""
    missing = _missing_fmnist(raw)
    if missing:
        raise DataNotFoundError(
            f"Fashion-MNIST not found under {raw}{download_error}. Put the four original files "
            f"{', '.join(m + '.gz' for m in missing)} (or their extracted forms) in {raw}/, or run once with "
            f"internet so torchvision downloads them, or pass --data-root to a folder holding FashionMNIST/raw/.")
    arrays = {stem: _read_idx(_find_idx(raw, stem)) for stem in FMNIST_FILES}
    for split, n in (("train", 60000), ("t10k", 10000)):
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if len(images) != len(labels) or images.shape[1:] != (28, 28) or labels.max(initial=0) > 9:
            raise UserError(f"the Fashion-MNIST {split} files under {raw} do not belong together ({len(images)} "
                            f"images of shape {images.shape[1:]}, {len(labels)} labels); replace them with the "
                            f"original files ({n} each)")
    train = ImageSet(resize_uint8(torch.from_numpy(arrays["train-images-idx3-ubyte"].copy())[:, None], IMAGE_SIZE),
                     torch.from_numpy(arrays["train-labels-idx1-ubyte"].astype(np.int64)))
    test = ImageSet(resize_uint8(torch.from_numpy(arrays["t10k-images-idx3-ubyte"].copy())[:, None], IMAGE_SIZE),
                    torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)))
    return train, test, list(FMNIST_CLASSES)


# --- image folders (CIFAR-10's PNG copy, or any root/{train,test}/<class>/ tree) ------------------------------------

def _folder_listing(root: Path) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"no class folders under {root / 'train'}")
    listing = {}
    for split in ("train", "test"):
        items = []
        for label, cls in enumerate(classes):
            folder = root / split / cls
            if not folder.is_dir():
                raise DataNotFoundError(f"image folder {folder} is missing (every class needs train/ and test/)")
            items += [(p, label) for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        listing[split] = items
    return classes, listing


def _decode(items: list[tuple[Path, int]], channels: int) -> ImageSet:
    from PIL import Image
    from tqdm import tqdm

    mode = "L" if channels == 1 else "RGB"
    images = np.empty((len(items), IMAGE_SIZE, IMAGE_SIZE, channels), dtype=np.uint8)
    for i, (path, _) in enumerate(tqdm(items, desc="decoding images", unit="img", leave=False, mininterval=1,
                                      disable=None)):
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
                images[i] = np.asarray(img).reshape(IMAGE_SIZE, IMAGE_SIZE, channels)
        except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for truncated or non-image files
            raise UserError(f"{path} is not a readable image ({type(exc).__name__}: {exc}); replace or remove "
                            f"it") from None
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels)


def load_image_folder(root: Path, channels: int, cache_dir: Path | None) -> tuple[ImageSet, ImageSet, list[str]]:
    """`root/{train,test}/<class>/*.png`; labels follow sorted class-folder names (as torchvision's ImageFolder).

    Decoding tens of thousands of PNGs takes a while, so the decoded tensors are cached, keyed by the listing.
    """
    root = Path(root)
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataNotFoundError(f"image folder {root} needs train/<class>/ and test/<class>/ sub-folders")
    classes, listing = _folder_listing(root)
    key = hashlib.sha256(repr((str(root.resolve()), channels, classes,
                               [(str(p.relative_to(root)), l) for s in ("train", "test") for p, l in listing[s]])
                              ).encode()).hexdigest()[:16]
    cache_file = Path(cache_dir) / "datasets" / f"imagefolder-{key}.pt" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        t = load_tensors(cache_file)
        return ImageSet(t["train_x"], t["train_y"]), ImageSet(t["test_x"], t["test_y"]), classes
    train, test = _decode(listing["train"], channels), _decode(listing["test"], channels)
    if cache_file is not None:
        atomic_torch_save({"train_x": train.images, "train_y": train.labels, "test_x": test.images,
                           "test_y": test.labels}, cache_file)
    return train, test, classes


# --- CIFAR-10 ------------------------------------------------------------------------------------------------------

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_cifar10(data_root: Path, cache_dir: Path | None, download: bool = True) -> tuple[ImageSet, ImageSet, list[str]]:
    """torchvision's `cifar-10-batches-py` under the data root, or an image-folder copy at `cifar10/`."""
    data_root = Path(data_root)
    folder = data_root / "cifar10"
    if (folder / "train").is_dir():
        train, test, classes = load_image_folder(folder, 3, cache_dir)
        if classes != CIFAR10_CLASSES:
            raise UserError(f"{folder} has classes {classes}, expected the ten CIFAR-10 classes {CIFAR10_CLASSES}")
        return train, test, classes
    import torchvision

    download_error = ""
    if not (data_root / "cifar-10-batches-py").is_dir() and download:
        try:
            torchvision.datasets.CIFAR10(str(data_root), train=True, download=True)
        except Exception as exc:
            download_error = f" (download failed: {type(exc).__name__})"
    if not (data_root / "cifar-10-batches-py").is_dir():
        raise DataNotFoundError(
            f"CIFAR-10 not found under {data_root}{download_error}. Either put torchvision's "
            f"cifar-10-batches-py/ folder (from cifar-10-python.tar.gz) in {data_root}/, or an image-folder copy "
            f"as {folder}/{{train,test}}/<class>/*.png, or run once with internet so torchvision downloads it.")
    sets = []
    for train in (True, False):
        try:
            ds = torchvision.datasets.CIFAR10(str(data_root), train=train, download=False)
        except Exception as exc:  # truncated pickles: EOFError, UnpicklingError, ...
            raise UserError(f"{data_root / 'cifar-10-batches-py'} is incomplete or corrupt ({type(exc).__name__}); "
                            f"delete it and download cifar-10-python.tar.gz again") from None
        sets.append(ImageSet(torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                             torch.tensor(ds.targets, dtype=torch.int64)))
    return sets[0], sets[1], list(CIFAR10_CLASSES)


def resolve_data_root(cli_value: str | os.PathLike | None) -> Path:
    """--data-root, else $CLDIFF_BENCH_DATA, else <cache dir>/data."""
    from ..paths import cache_dir
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get("CLDIFF_BENCH_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"
