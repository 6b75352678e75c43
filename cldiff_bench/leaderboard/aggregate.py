"""From result files to leaderboard rows: mean and standard error over seeds, refusing what does not compare.

A pure function of the result files: no run state, no "best seed". Cells that would mix suite versions, FID
extractors, sample counts, budgets or evaluation settings are refused (or, on request, kept and flagged).

Results of kind "oracle" (`cldiff-bench oracle`: real held-out images scored as if generated) become the table's
`real data` row, the floor of the metrics, averaged over the class orders (seeds) given. It trains nothing, so it
is held to the runs only on what makes the numbers comparable (SCORING), never on budget, model or precision.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..diffusion.samplers import DEFAULT_SAMPLER
from ..errors import UserError
from ..results import RESULT_NAME
from .inputs import read_result

# metric -> True when lower is better
METRICS = {"fid": True, "kld": True, "ard": True, "accuracy": False}
NAMES = {"fid": "FID", "kld": "KLD", "ard": "ARD", "accuracy": "Accuracy"}
TRAINING_NFE_COUNTERS = ("student_forward", "student_backward", "teacher_forward")
# What an oracle must share with the runs of its table for its metrics to be the same measurement.
SCORING = ("suite version", "extractor", "generated samples", "evaluation classifier")
ORACLE_NAME = "real data"


@dataclass
class LoadedResult:
    path: Path
    doc: dict

    @property
    def strategy(self) -> str:
        """The row the result belongs to: its strategy, or the variant it ran as (gd+pd: gd with a teacher
        accelerator), which is a row of its own."""
        return self.doc["config"].get("variant") or self.doc["config"]["strategy"]

    @property
    def seed(self) -> int:
        return int(self.doc["config"]["seed"])

    @property
    def kind(self) -> str:
        return self.doc.get("kind", "run")

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
                # A configuration names its sampler only where it is not DDIM.
                "metric sampler": settings.get("sampler", DEFAULT_SAMPLER),
                "evaluation classifier": _classifier_identity(ev.get("evaluation_classifier") or {})}

    def scoring(self) -> dict:
        full = self.comparability()
        return {k: full[k] for k in SCORING}

    def row_identity(self) -> dict:
        """What must be equal for results to be seeds of one row: the configuration but the seed."""
        cfg = dict(self.doc["config"])
        cfg.pop("seed")
        cfg.pop("class_order", None)  # follows from the seed
        return cfg


def _classifier_identity(info: dict) -> str | None:
    """The evaluation classifier's version, and its weights' digest where the result records it (results before
    the digest was recorded give the version alone)."""
    version, digest = info.get("version"), info.get("weights_sha256")
    return f"{version} (weights {digest})" if version and digest else version


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
            results.append(LoadedResult(path, read_result(path)))
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
    kind: str = "run"

    @property
    def oracle(self) -> bool:
        return self.kind == "oracle"

    @property
    def name(self) -> str:
        """How the row is shown; claims and csv use `strategy` (the oracle's is "real-data")."""
        return ORACLE_NAME if self.oracle else self.strategy


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


def _mixed_settings(runs: list[LoadedResult], oracles: list[LoadedResult]) -> dict[str, set]:
    mixed = _differences(runs, LoadedResult.comparability)
    mixed.update(_differences(runs + oracles, LoadedResult.scoring))  # a superset of the runs' values per key
    return mixed


def build_tables(results: list[LoadedResult], allow_mixed: bool = False) -> list[Table]:
    by_table: dict[tuple, list[LoadedResult]] = defaultdict(list)
    for r in results:
        by_table[r.table_key].append(r)
    tables = []
    for (stream, profile), items in sorted(by_table.items()):
        runs = [r for r in items if r.kind == "run"]
        oracles = [r for r in items if r.kind == "oracle"]
        mixed = _mixed_settings(runs, oracles)
        notes = []
        if mixed:
            what = "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in mixed.items())
            if not allow_mixed:
                raise UserError(f"results for {stream} / {profile} mix {what}; refusing to rank them together "
                                f"(pass --allow-mixed to show them with a flag)")
            notes.append(f"mixed settings, rows flagged with (!): {what}")
        reference = (runs or oracles)[0]
        by_strategy: dict[str, list[LoadedResult]] = defaultdict(list)
        for r in runs:
            by_strategy[r.strategy].append(r)
        rows = []
        for strategy, seeds_runs in sorted(by_strategy.items()):
            _check_seeds(stream, profile, strategy, seeds_runs)
            rows.append(_row(strategy, seeds_runs, flagged=bool(mixed) and any(
                r.comparability() != reference.comparability() for r in seeds_runs)))
        if oracles:  # last, so that it reads as the floor under the ranked rows; one row over the class orders
            _check_seeds(stream, profile, oracles[0].strategy, oracles)
            rows.append(_row(oracles[0].strategy, oracles, kind="oracle", flagged=bool(mixed) and any(
                o.scoring() != reference.scoring() for o in oracles)))
        tables.append(Table(stream, profile, rows, reference.comparability(), notes))
    return tables


def _check_seeds(stream: str, profile: str, strategy: str, runs: list[LoadedResult]) -> None:
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


def _row(strategy: str, runs: list[LoadedResult], flagged: bool, kind: str = "run") -> Row:
    final, per_task = {}, {}
    for metric in METRICS:
        series = [r.doc["metrics"].get(metric) for r in runs]
        if any(s is None or any(v is None for v in s) for s in series):
            continue
        n_tasks = min(len(s) for s in series)
        per_task[metric] = [mean_and_standard_error([s[k] for s in series]) for k in range(n_tasks)]
        final[metric] = mean_and_standard_error([s[-1] for s in series])
    wall = sum(r.doc.get("wall_seconds", 0.0) for r in runs) / len(runs)
    counts = [r.doc["cost"].get("counts", {}) for r in runs]
    nfe = sum(sum(c.get(name, 0) for name in TRAINING_NFE_COUNTERS) for c in counts) / len(runs)
    return Row(strategy, [r.seed for r in runs], final, per_task, wall, nfe, list(runs),
               ["(!)"] if flagged else [], kind)
