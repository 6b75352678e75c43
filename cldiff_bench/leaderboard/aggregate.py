"""From result files to leaderboard rows: mean and standard error over seeds, refusing what does not compare.

A pure function of the result files: no run state, no "best seed". Cells that would mix suite versions, FID
extractors, sample counts, budgets or evaluation settings are refused (or, on request, kept and flagged).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..io import read_json
from ..results import RESULT_NAME, validate_result

# metric -> True when lower is better
METRICS = {"fid": True, "kld": True, "ard": True, "accuracy": False}
TRAINING_NFE_COUNTERS = ("student_forward", "student_backward", "teacher_forward")


@dataclass
class LoadedResult:
    path: Path
    doc: dict

    @property
    def strategy(self) -> str:
        return self.doc["config"]["strategy"]

    @property
    def seed(self) -> int:
        return int(self.doc["config"]["seed"])

    @property
    def table_key(self) -> tuple[str, str]:
        return self.doc["config"]["stream"], self.doc["config"]["budget"]["profile"]

    def comparability(self) -> dict:
        """What must be equal for two results to share a table."""
        cfg, ev = self.doc["config"], self.doc.get("evaluation") or {}
        settings = cfg.get("evaluation") or {}
        return {"suite version": self.doc["suite"]["version"], "budget": cfg["budget"], "model": cfg["model"],
                "precision": cfg.get("precision"), "extractor": ev.get("extractor"),
                "generated samples": settings.get("num_generated"), "metric sampling steps": settings.get("fid_steps"),
                "evaluation classifier": (ev.get("evaluation_classifier") or {}).get("version")}

    def row_identity(self) -> dict:
        """What must be equal for results to be seeds of one row: the configuration but the seed."""
        cfg = dict(self.doc["config"])
        cfg.pop("seed")
        cfg.pop("class_order", None)  # follows from the seed
        return cfg


def find_results(paths: list[Path]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(p.rglob(RESULT_NAME))
        elif p.is_file():
            found.append(p)
        else:
            raise UserError(f"{p} does not exist")
    if not found:
        raise UserError(f"no result files under {', '.join(map(str, paths))}")
    return found


def load_results(paths: list[Path], strict: bool = False) -> tuple[list[LoadedResult], list[str]]:
    """Valid results, and a line per malformed file (skipped; with strict=True the first one is an error)."""
    results, skipped = [], []
    for path in find_results(paths):
        try:
            results.append(LoadedResult(path, validate_result(read_json(path), str(path))))
        except UserError as exc:
            if strict:
                raise
            skipped.append(str(exc))
    return results, skipped


def mean_and_standard_error(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean with ddof = 1 (None for a single seed)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


@dataclass
class Row:
    strategy: str
    seeds: list[int]
    final: dict[str, tuple[float, float | None]]          # metric -> (mean, se) after the last task
    per_task: dict[str, list[tuple[float, float | None]]]  # metric -> [(mean, se) after task k]
    wall_seconds: float
    training_nfe: float
    results: list[LoadedResult] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)


@dataclass
class Table:
    stream: str
    profile: str
    rows: list[Row]
    settings: dict
    notes: list[str] = field(default_factory=list)


def _differences(items: list[LoadedResult], of) -> dict[str, set]:
    seen: dict[str, set] = defaultdict(set)
    for r in items:
        for k, v in of(r).items():
            seen[k].add(repr(v))
    return {k: v for k, v in seen.items() if len(v) > 1}


def build_tables(results: list[LoadedResult], allow_mixed: bool = False) -> list[Table]:
    by_table: dict[tuple, list[LoadedResult]] = defaultdict(list)
    for r in results:
        by_table[r.table_key].append(r)
    tables = []
    for (stream, profile), items in sorted(by_table.items()):
        mixed = _differences(items, LoadedResult.comparability)
        notes = []
        if mixed:
            what = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in mixed.items())
            if not allow_mixed:
                raise UserError(f"results for {stream} / {profile} mix {what}; refusing to rank them together "
                                f"(pass --allow-mixed to show them with a flag)")
            notes.append(f"mixed settings, rows flagged with (!): {what}")
        by_strategy: dict[str, list[LoadedResult]] = defaultdict(list)
        for r in items:
            by_strategy[r.strategy].append(r)
        rows = []
        for strategy, runs in sorted(by_strategy.items()):
            runs.sort(key=lambda r: r.seed)
            seeds = [r.seed for r in runs]
            if len(set(seeds)) != len(seeds):
                dupes = sorted({s for s in seeds if seeds.count(s) > 1})
                raise UserError(f"{stream} / {profile} / {strategy}: seed(s) {dupes} appear in more than one file: "
                                + ", ".join(str(r.path) for r in runs if r.seed in dupes))
            differing = _differences(runs, LoadedResult.row_identity)
            if differing:
                raise UserError(f"{stream} / {profile} / {strategy}: the seeds' configurations differ in "
                                f"{', '.join(differing)}: {', '.join(str(r.path) for r in runs)}")
            rows.append(_row(strategy, runs, flagged=bool(mixed) and any(
                r.comparability() != items[0].comparability() for r in runs)))
        tables.append(Table(stream, profile, rows, items[0].comparability(), notes))
    return tables


def _row(strategy: str, runs: list[LoadedResult], flagged: bool) -> Row:
    final, per_task = {}, {}
    for metric in METRICS:
        series = [r.doc["metrics"].get(metric) for r in runs]
        if any(s is None or any(v is None for v in s) for s in series):
            continue
        n_tasks = min(len(s) for s in series)
        per_task[metric] = [mean_and_standard_error([s[k] for s in series]) for k in range(n_tasks)]
        final[metric] = mean_and_standard_error([s[-1] for s in series])
    wall = sum(r.doc.get("wall_seconds", 0.0) for r in runs) / len(runs)
    nfe = sum(sum(r.doc["cost"]["counts"].get(c, 0) for c in TRAINING_NFE_COUNTERS) for r in runs) / len(runs)
    return Row(strategy, [r.seed for r in runs], final, per_task, wall, nfe, list(runs),
               ["(!)"] if flagged else [])
