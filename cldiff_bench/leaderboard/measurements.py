"""Measurements beside the runs: experiments that are no continual-learning run but decide a claim on the board
(the DSD decision: which few-step teacher beats plain DDIM), kept in a results folder's `measurements/` as

    {"kind": "measurement", "name": "dsd-decision", "stream": "fmnist-5", "profile": "cpu",
     "title": "...", "command": "python benchmarks/...", "seeds": [0, 1, 2],
     "samples": {"ddim@2": {"fid": [42.0, 57.1, 31.3], "kld": [...]}, "pd@2": {...}, ...}}

Every sample of a measurement holds one value per seed, in the order of `seeds`, and the values of one seed come
from the same model and sample seeds: a claim between two of its samples is judged by a paired test
(claims.py). The board's Findings show such claims under the table of the measurement's stream and profile.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .inputs import read_text

MEASUREMENTS_DIR = "measurements"
KIND = "measurement"


@dataclass(frozen=True)
class Measurement:
    name: str
    stream: str
    profile: str
    title: str
    command: str
    seeds: tuple[int, ...]
    samples: dict[str, dict[str, list[float]]]  # sample -> metric -> one value per seed


def measurement_document(name: str, stream: str, profile: str, title: str, command: str, seeds: list[int],
                         samples: dict[str, dict[str, list[float]]]) -> dict:
    """The file a benchmark writes into a results folder's measurements/ (checked as `load_measurement` reads it)."""
    doc = {"kind": KIND, "name": name, "stream": stream, "profile": profile, "title": title, "command": command,
           "seeds": list(seeds), "samples": samples}
    _measurement(doc, f"measurement {name!r}")
    return doc


def load_measurement(path: Path) -> Measurement:
    text = read_text(path, "measurement file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is corrupt (not valid JSON: {exc})") from exc
    return _measurement(doc, str(path))


def _measurement(doc, where: str) -> Measurement:
    def fail(problem: str):
        raise UserError(f"{where}: {problem}")

    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        fail(f"not a measurement (its \"kind\" must be {KIND!r})")
    for key in ("name", "stream", "profile", "title", "command"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            fail(f"{key!r} must be a non-empty string")
    seeds = doc.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        fail("'seeds' must be a non-empty list of whole numbers")
    samples = doc.get("samples")
    if not isinstance(samples, dict) or not samples:
        fail("'samples' must map sample names to their metrics")
    for sample, metrics in samples.items():
        if not isinstance(metrics, dict):
            fail(f"sample {sample!r} must map metrics to one value per seed")
        for metric, values in metrics.items():
            if not isinstance(values, list) or len(values) != len(seeds) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                fail(f"sample {sample!r}, metric {metric!r}: one finite number per seed ({len(seeds)}) expected")
    return Measurement(doc["name"], doc["stream"], doc["profile"], doc["title"], doc["command"], tuple(seeds),
                       {s: {m: [float(v) for v in vs] for m, vs in ms.items()} for s, ms in samples.items()})


def find_measurements(roots) -> dict[str, Measurement]:
    """The measurements in each results folder's measurements/, by name (a name twice is an error)."""
    found: dict[str, Measurement] = {}
    for root in map(Path, roots):
        folder = root / MEASUREMENTS_DIR
        if not root.is_dir() or not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.json")):
            measurement = load_measurement(path)
            if measurement.name in found:
                raise UserError(f"{path}: a second measurement named {measurement.name!r}")
            found[measurement.name] = measurement
    return found
