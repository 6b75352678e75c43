"""Findings: claims about rankings (a TOML file) checked against the leaderboard's own numbers.

    [[claim]]
    metric = "fid"                       # a key of METRICS; lower/higher-is-better comes from there
    order = ["joint", "gd", "naive"]     # best first; each adjacent pair is one comparison
    stream = "fmnist-5"                  # optional: only tables of this stream (default: every table)
    profile = "paper"                    # optional: only tables of this profile
    source = "Masip et al. 2024, Table 1"  # optional free text

Each pair is judged in every table that has both rows and the metric, from the rows' means and standard errors:
`holds` when the claimed-better row is better by more than the combined standard error sqrt(se_a^2 + se_b^2),
`contradicted` when the other row is better by more than that, `undecided` otherwise, and `n/a` when a run row has
fewer than 2 seeds (no standard error, so no yardstick). The `real data` row is the floor (over the class orders it
was measured for), not a mean over training runs: its standard error counts as 0, and it takes part only in claims
that name `real-data`.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .aggregate import METRICS, NAMES, Row, Table
from .inputs import read_text

DEFAULT_CLAIMS = Path(__file__).with_name("study_claims.toml")
DEFAULT_CLAIMS_NAME = "the suite's study claims (`cldiff_bench/leaderboard/study_claims.toml`)"
CLAIM_KEYS = ("metric", "order", "stream", "profile", "source")
VERDICTS = ("holds", "contradicted", "undecided", "n/a")


@dataclass(frozen=True)
class Claim:
    metric: str
    order: tuple[str, ...]
    stream: str | None = None
    profile: str | None = None
    source: str | None = None

    def pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.order, self.order[1:]))

    def applies_to(self, table: Table) -> bool:
        return self.stream in (None, table.stream) and self.profile in (None, table.profile)


def pair_text(metric: str, better: str, worse: str) -> str:
    """'FID: joint < gd' (lower is better) or 'Accuracy: joint > gd'."""
    return f"{NAMES[metric]}: {better} {'<' if METRICS[metric] else '>'} {worse}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def load_claims(path: Path) -> list[Claim]:
    path = Path(path)
    text = read_text(path, "claims file")

    def fail(problem: str):
        raise UserError(f"claims file {path}: {_one_line(problem)}")

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        fail(f"not valid TOML ({exc})")
    unknown = sorted(set(doc) - {"claim"})
    if unknown:
        fail(f"unknown top-level key(s) {', '.join(map(repr, unknown))} (claims go in [[claim]] tables)")
    entries = doc.get("claim", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        fail("'claim' must be an array of tables ([[claim]])")
    return [_claim(entry, i + 1, fail) for i, entry in enumerate(entries)]


def _claim(entry: dict, number: int, fail) -> Claim:
    where = f"claim {number}"
    unknown = sorted(set(entry) - set(CLAIM_KEYS))
    if unknown:
        fail(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(CLAIM_KEYS)})")
    metric = entry.get("metric")
    if metric not in METRICS:
        fail(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)}")
    order = entry.get("order")
    if not isinstance(order, list) or not all(isinstance(o, str) and o for o in order):
        fail(f"{where}: 'order' must be a list of strategy names, best first")
    if len(order) < 2:
        fail(f"{where}: 'order' needs at least 2 strategies to compare, got {len(order)}")
    if len(set(order)) != len(order):
        fail(f"{where}: 'order' names a strategy twice: {order}")
    for key in ("stream", "profile", "source"):
        if key in entry and not isinstance(entry[key], str):
            fail(f"{where}: {key!r} must be a string")
    return Claim(metric, tuple(order), entry.get("stream"), entry.get("profile"), entry.get("source"))


@dataclass
class Comparison:
    """One adjacent pair of one claim, judged in one table."""
    stream: str
    profile: str
    metric: str
    better: str                    # the row the claim says is better (strategy name)
    worse: str
    better_value: tuple[float, float | None]  # (mean, se) after the last task
    worse_value: tuple[float, float | None]
    better_n: int
    worse_n: int
    advantage: float               # how much better the claimed-better row is (negative: it is worse)
    combined_se: float | None
    verdict: str
    source: str | None
    better_oracle: bool = False    # the real-data row (shown with no s.e.)
    worse_oracle: bool = False

    @property
    def text(self) -> str:
        return pair_text(self.metric, self.better, self.worse)


@dataclass
class Findings:
    source: str                    # how the claims file is named on the page
    comparisons: list[Comparison]
    untested: list[str]            # pairs that no table could judge (a row, the metric or the stream is missing)

    def for_table(self, table: Table) -> list[Comparison]:
        return [c for c in self.comparisons if (c.stream, c.profile) == (table.stream, table.profile)]

    def counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.comparisons) for v in VERDICTS}


def _yardstick_se(row: Row, metric: str) -> float | None:
    if row.oracle:
        return 0.0
    return row.final[metric][1] if len(row.seeds) >= 2 else None


def verdict(lower_is_better: bool, better: tuple[float, float | None], worse: tuple[float, float | None]
            ) -> tuple[float, float | None, str]:
    """(advantage of the claimed-better row, combined s.e., verdict) from two (mean, se) pairs."""
    advantage = (worse[0] - better[0]) if lower_is_better else (better[0] - worse[0])
    if better[1] is None or worse[1] is None:
        return advantage, None, "n/a"
    se = math.hypot(better[1], worse[1])
    if advantage > se:
        return advantage, se, "holds"
    if -advantage > se:
        return advantage, se, "contradicted"
    return advantage, se, "undecided"


def check_claims(tables: list[Table], claims: list[Claim], source: str) -> Findings:
    comparisons, untested, seen = [], [], set()
    for claim in claims:
        for a, b in claim.pairs():
            judged = False
            for table in tables:
                if not claim.applies_to(table):
                    continue
                rows = {r.strategy: r for r in table.rows}
                ra, rb = rows.get(a), rows.get(b)
                if ra is None or rb is None or claim.metric not in ra.final or claim.metric not in rb.final:
                    continue
                judged = True
                key = (table.stream, table.profile, claim.metric, a, b)
                if key in seen:  # the same comparison stated by two claims is shown once, under the first
                    continue
                seen.add(key)
                va = (ra.final[claim.metric][0], _yardstick_se(ra, claim.metric))
                vb = (rb.final[claim.metric][0], _yardstick_se(rb, claim.metric))
                advantage, se, word = verdict(METRICS[claim.metric], va, vb)
                comparisons.append(Comparison(table.stream, table.profile, claim.metric, a, b,
                                              ra.final[claim.metric], rb.final[claim.metric], len(ra.seeds),
                                              len(rb.seeds), advantage, se, word, claim.source, ra.oracle,
                                              rb.oracle))
            if not judged:
                where = " on " + " / ".join(x for x in (claim.stream, claim.profile) if x) if (
                    claim.stream or claim.profile) else ""
                text = pair_text(claim.metric, a, b) + where
                if text not in untested:
                    untested.append(text)
    return Findings(source, comparisons, untested)
