"""The result file: one JSON document per (stream, strategy, config, seed) cell.

Schema (version 1), top level:
  schema_version, suite {name, version, git}, packages {name: version}, device, created (UTC ISO time),
  config (the resolved configuration), config_hash, stream (name, class order, classes per task, sizes),
  evaluation (extractor, sample counts, evaluation classifier; null when not evaluated),
  tasks [ {task, classes, train {iterations, epochs, images, batch_size, mean_losses},
           metrics {fid, kld, ard, accuracy, ...}, cost {counts, seconds, peak_rss_bytes, ...}, sample_grid} ],
  metrics {name: [value after task 0, after task 1, ...]}   (the per-task matrix, for the leaderboard)
  cost {counts, seconds}   (totals), wall_seconds
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as metadata
import subprocess
from pathlib import Path

from .. import __version__
from ..cost import COUNTERS, PHASES, device_name
from ..errors import UserError

SCHEMA_VERSION = 1
RESULT_NAME = "result.json"
PACKAGES = ("torch", "torchvision", "avalanche-lib", "torch-fidelity", "pluggy", "numpy", "scikit-learn")
METRIC_NAMES = ("fid", "kld", "ard", "accuracy")


def result_path(run_dir: Path) -> Path:
    return Path(run_dir) / RESULT_NAME


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """The suite's git commit when it runs from a checkout (with '+dirty' for uncommitted changes)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def metric_matrix(records: list[dict]) -> dict[str, list]:
    """{metric: [value after task 0, after task 1, ...]} for the metrics any task reports."""
    metrics = {}
    for name in METRIC_NAMES:
        values = [r["metrics"].get(name) for r in records]
        if any(v is not None for v in values):
            metrics[name] = values
    return metrics


def build_result(records: list[dict], config: dict, config_digest: str, stream, device,
                 evaluation: dict | None, wall_seconds: float) -> dict:
    """The result document of a run: its task records, resolved configuration and its hash, the stream, the
    device, the evaluator's description (None when not evaluated) and the wall time."""
    metrics = metric_matrix(records)
    totals = {"counts": {c: sum(r["cost"]["counts"][c] for r in records) for c in COUNTERS},
              # .get: a task recorded before a phase existed (a run resumed across versions) spent no time in it
              "seconds": {p: sum(r["cost"]["seconds"].get(p, 0.0) for r in records) for p in PHASES}}
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": {"name": "cldiff-bench", "version": __version__, "git": git_revision()},
        "packages": package_versions(),
        "device": device_name(device),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "config_hash": config_digest,
        "stream": stream.describe(),
        "evaluation": evaluation,
        "tasks": records,
        "metrics": metrics,
        "cost": totals,
        "wall_seconds": wall_seconds,
    }


def validate_result(doc: dict, source: str = "result") -> dict:
    """Check the fields the leaderboard and `check` rely on; a malformed file is named in the error."""
    if not isinstance(doc, dict):
        raise UserError(f"{source}: not a JSON object")
    missing = [k for k in ("schema_version", "suite", "config", "stream", "tasks", "metrics", "cost") if k not in doc]
    if missing:
        raise UserError(f"{source}: not a cldiff-bench result (missing {', '.join(missing)})")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise UserError(f"{source}: schema version {doc['schema_version']}, this suite reads {SCHEMA_VERSION}")
    n = len(doc["tasks"])
    for name, values in doc["metrics"].items():
        if not isinstance(values, list) or len(values) != n:
            raise UserError(f"{source}: metric {name!r} must have one value per task ({n})")
    return doc
