"""The FID statistics of the real images a task's samples are compared with: the test images of the seen classes
(a fixed subset of them with `num_real`), cached under the cache folder and keyed by everything that determines
them, so every run of every method on a data set computes them once."""
from __future__ import annotations

import hashlib
import json
import pathlib

import torch

from ..diffusion.seeding import generator
from ..io import atomic_torch_save, load_tensors, sha256_of_arrays
from ..streams.base import ImageSet, Stream
from .features import extract_features
from .instruments import FidExtractor
from .metrics import fid_statistics

_PURPOSE_REAL_SUBSET = 0xE002
# Bump when anything that changes cached real statistics changes (preprocessing, statistics dtype).
REAL_STATS_VERSION = "r1"


class RealStatistics:
    def __init__(self, stream: Stream, settings, cache_dir: pathlib.Path, extractor: FidExtractor,
                 progress: bool = True):
        self.stream = stream
        self.settings = settings
        self.cache_dir = cache_dir
        self.extractor = extractor
        self.progress = progress

    def reference_images(self, k: int) -> ImageSet:
        real = self.stream.test_seen(k)
        n = self.settings.num_real
        if n is None or n >= len(real):
            return real
        # Keyed by the seen classes, not the run seed: every run of every method meets the same reference images.
        g = generator(_PURPOSE_REAL_SUBSET, len(real), *self.stream.seen_classes(k))
        idx = torch.randperm(len(real), generator=g)[:n].sort().values
        return ImageSet(real.images[idx], real.labels[idx])

    def of_task(self, k: int) -> tuple[dict, str, int]:
        """(mu/sigma of the real seen test images, their sha256, number of images), from the cache if present."""
        extractor, feature = self.extractor.built()
        real = self.reference_images(k)
        key_json = self._cache_key(k, feature, real)
        path = self._cache_path(key_json)
        stats = _cached(path, key_json)
        if stats is None:
            feats = extract_features(extractor, real.images, self.settings.batch_size, self.extractor.device,
                                     self.progress, f"FID real features task {k}")[feature]
            stats = fid_statistics(feats)
            atomic_torch_save({"mu": torch.from_numpy(stats["mu"]), "sigma": torch.from_numpy(stats["sigma"]),
                               "key": key_json}, path)
        return stats, sha256_of_arrays(stats["mu"], stats["sigma"]), len(real)

    def _cache_key(self, k: int, feature: str, real: ImageSet) -> str:
        key = {"version": REAL_STATS_VERSION, "dataset": self.stream.dataset,
               "seen_classes": list(self.stream.seen_classes(k)), "extractor": self.extractor.identity,
               "feature": feature, "num_real": len(real),
               "images_sha256": sha256_of_arrays(real.images, real.labels)}
        return json.dumps(key, sort_keys=True)

    def _cache_path(self, key_json: str) -> pathlib.Path:
        digest = hashlib.sha256(key_json.encode()).hexdigest()[:20]
        return self.cache_dir / "fid_stats" / f"{self.stream.dataset}-{self.settings.extractor}-{digest}.pt"


def _cached(path: pathlib.Path, key_json: str) -> dict | None:
    """The statistics cached at `path` when they were computed for `key_json` (a hash's prefix can collide)."""
    if not path.exists():
        return None
    cached = load_tensors(path)
    if cached.get("key") != key_json:
        return None
    return {"mu": cached["mu"].numpy(), "sigma": cached["sigma"].numpy()}
