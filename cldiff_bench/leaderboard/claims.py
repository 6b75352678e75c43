"""Findings: claims about rankings (a TOML file) checked against the leaderboard's own numbers.

    [[claim]]
    metric = "fid"                       # a key of METRICS; lower/higher-is-better comes from there
    order = ["joint", "gd", "naive"]     # best first; each adjacent pair is one comparison
    stream = "fmnist-5"                  # optional: only tables of this stream (default: every table)
    profile = "paper"                    # optional: only tables of this profile
    source = "Masip et al. 2024, Table 1"  # optional free text
    measurement = "dsd-decision"         # optional: compare samples of this measurement instead of table rows

Each pair is judged in every table that has both rows and the metric, by a one-sided Welch t-test on the rows'
seeds (means, standard errors and seed counts): t = advantage / sqrt(se_a^2 + se_b^2) with the Welch-Satterthwaite
degrees of freedom, p = the chance of an advantage at least this large were the claimed-better row no better.
`holds` when p < ALPHA, `contradicted` when p > 1 - ALPHA (the other row is better at the same level), `undecided`
otherwise, and `n/a` when a run row has fewer than 2 seeds (no spread to test against). A t-test rather than a
bootstrap interval: with 3 seeds a row has 10 distinct resamples, and the bootstrap's intervals are too narrow
there, where the t distribution's heavy tails at 2 to 4 degrees of freedom carry exactly that uncertainty. The
`real data` row is the floor (over the class orders it was measured for), not a mean over training runs: its
standard error counts as 0 (the test is then one-sample), and it takes part only in claims that name `real-data`.

A claim that names a `measurement` (measurements.py: an experiment beside the runs, such as the DSD decision)
orders that measurement's samples instead of rows, and is shown with the table of the measurement's stream and
profile. Its samples are paired by seed (one model and one set of sample seeds per seed), so the test is the paired
one-sided t-test on the per-seed differences, with n - 1 degrees of freedom.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .aggregate import METRICS, NAMES, Row, Table, mean_and_standard_error
from .inputs import read_text
from .measurements import Measurement

DEFAULT_CLAIMS = Path(__file__).with_name("study_claims.toml")
DEFAULT_CLAIMS_NAME = "the suite's study claims (`cldiff_bench/leaderboard/study_claims.toml`)"
CLAIM_KEYS = ("metric", "order", "stream", "profile", "source", "measurement")
VERDICTS = ("holds", "contradicted", "undecided", "n/a")
ALPHA = 0.05  # the one-sided test's level
BOUNDS = ("joint", "naive")  # the upper and the lower bound: a metric that cannot tell them apart measures nothing


@dataclass(frozen=True)
class Claim:
    metric: str
    order: tuple[str, ...]
    stream: str | None = None
    profile: str | None = None
    source: str | None = None
    measurement: str | None = None

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
        fail(f"{where}: 'order' must be a list of strategy (or a measurement's sample) names, best first")
    if len(order) < 2:
        fail(f"{where}: 'order' needs at least 2 strategies to compare, got {len(order)}")
    if len(set(order)) != len(order):
        fail(f"{where}: 'order' names a strategy twice: {order}")
    for key in ("stream", "profile", "source", "measurement"):
        if key in entry and not isinstance(entry[key], str):
            fail(f"{where}: {key!r} must be a string")
    if "measurement" in entry and ("stream" in entry or "profile" in entry):
        fail(f"{where}: a measurement's claim takes the measurement's stream and profile, not its own")
    return Claim(metric, tuple(order), entry.get("stream"), entry.get("profile"), entry.get("source"),
                 entry.get("measurement"))


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
    t: float | None                # Welch's t of the advantage
    df: float | None               # its Welch-Satterthwaite degrees of freedom
    p_value: float | None          # one-sided: the chance of this advantage were the claimed-better row no better
    verdict: str
    source: str | None
    better_oracle: bool = False    # the real-data row (shown with no s.e.)
    worse_oracle: bool = False
    measurement: str | None = None  # the measurement whose samples it compares (paired by seed)

    @property
    def paired(self) -> bool:
        return self.measurement is not None

    @property
    def text(self) -> str:
        return pair_text(self.metric, self.better, self.worse)


@dataclass
class Findings:
    source: str                    # how the claims file is named on the page
    comparisons: list[Comparison]
    untested: list[str]            # pairs that no table could judge (a row, the metric or the stream is missing)
    measurements: dict[str, Measurement] = field(default_factory=dict)  # those the comparisons name

    def for_table(self, table: Table) -> list[Comparison]:
        return [c for c in self.comparisons if (c.stream, c.profile) == (table.stream, table.profile)]

    def unseparated_bounds(self, table: Table) -> list[Comparison]:
        """The table's tested comparisons of the upper bound against the lower one that do not hold: on those
        metrics the table cannot tell a strategy that remembers from one that forgets."""
        return [c for c in self.for_table(table)
                if (c.better, c.worse) == BOUNDS and c.verdict in ("undecided", "contradicted")]

    def counts(self) -> dict[str, int]:
        return {v: sum(c.verdict == v for c in self.comparisons) for v in VERDICTS}


@dataclass(frozen=True)
class Sample:
    """A row's final value of one metric as the test sees it: mean, standard error (0 for the real-data floor)
    and the number of seeds it is over (None: no spread to test against)."""
    mean: float
    se: float | None
    n: int


def _sample(row: Row, metric: str) -> Sample:
    mean, se = row.final[metric]
    if row.oracle:
        return Sample(mean, 0.0, len(row.seeds))
    return Sample(mean, se if len(row.seeds) >= 2 else None, len(row.seeds))


def welch(advantage: float, a: Sample, b: Sample) -> tuple[float, float, float, float]:
    """(combined s.e., t, degrees of freedom, one-sided p) of `advantage` between samples a and b."""
    from scipy.special import stdtr  # the t distribution's CDF; scipy.stats would add half a second to `leaderboard`

    variance = a.se ** 2 + b.se ** 2
    se = math.sqrt(variance)
    if variance == 0.0:  # no spread on either side: the sign decides
        return (0.0, *_by_sign(advantage, math.inf))
    # A floor's term is 0: its s.e. is 0 by definition, not measured over seeds.
    df = variance ** 2 / sum(x.se ** 4 / (x.n - 1) for x in (a, b) if x.se)
    t = advantage / se
    return se, t, df, float(stdtr(df, -t))


def _by_sign(advantage: float, df: float) -> tuple[float, float, float]:
    """(t, df, p) of an advantage measured without spread: its sign decides."""
    return (math.copysign(math.inf, advantage) if advantage else 0.0, df,
            0.0 if advantage > 0 else 1.0 if advantage < 0 else 0.5)


def _word(p: float) -> str:
    return "holds" if p < ALPHA else "contradicted" if p > 1 - ALPHA else "undecided"


def verdict(lower_is_better: bool, better: Sample, worse: Sample
            ) -> tuple[float, float | None, float | None, float | None, float | None, str]:
    """(advantage of the claimed-better row, combined s.e., t, df, one-sided p, verdict)."""
    advantage = (worse.mean - better.mean) if lower_is_better else (better.mean - worse.mean)
    if better.se is None or worse.se is None:
        return advantage, None, None, None, None, "n/a"
    se, t, df, p = welch(advantage, better, worse)
    return advantage, se, t, df, p, _word(p)


def paired_verdict(lower_is_better: bool, better: list[float], worse: list[float]
                   ) -> tuple[float, float | None, float | None, float | None, float | None, str]:
    """`verdict`'s tuple for samples paired by seed: the one-sided t-test on the per-seed advantages."""
    from scipy.special import stdtr

    advantages = [(w - b) if lower_is_better else (b - w) for b, w in zip(better, worse)]
    advantage, se = mean_and_standard_error(advantages)
    if se is None:
        return advantage, None, None, None, None, "n/a"
    df = float(len(advantages) - 1)
    # The same advantage on every seed: the sign decides.
    t, df, p = _by_sign(advantage, df) if se == 0.0 else (advantage / se, df, float(stdtr(df, -advantage / se)))
    return advantage, se, t, df, p, _word(p)


def measured_comparisons(claim: Claim, measurement: Measurement) -> list[Comparison]:
    """The claim's pairs judged on the measurement's samples (a pair whose samples lack the metric is left out)."""
    found = []
    for a, b in claim.pairs():
        values = [measurement.samples.get(x, {}).get(claim.metric) for x in (a, b)]
        if None in values:
            continue
        found.append(Comparison(measurement.stream, measurement.profile, claim.metric, a, b,
                                mean_and_standard_error(values[0]), mean_and_standard_error(values[1]),
                                len(values[0]), len(values[1]),
                                *paired_verdict(METRICS[claim.metric], *values), claim.source,
                                measurement=measurement.name))
    return found


def check_claims(tables: list[Table], claims: list[Claim], source: str,
                 measurements: dict[str, Measurement] | None = None) -> Findings:
    comparisons, untested, seen = [], [], set()
    for claim in claims:
        if claim.measurement is not None:
            measured = measured_comparisons(claim, measurements[claim.measurement]) if claim.measurement in (
                measurements or {}) else []
            comparisons += measured
            judged = {(c.better, c.worse) for c in measured}
            untested += [f"{pair_text(claim.metric, a, b)} (measurement {claim.measurement})"
                         for a, b in claim.pairs() if (a, b) not in judged]
            continue
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
                judged_values = verdict(METRICS[claim.metric], _sample(ra, claim.metric), _sample(rb, claim.metric))
                comparisons.append(Comparison(table.stream, table.profile, claim.metric, a, b,
                                              ra.final[claim.metric], rb.final[claim.metric], len(ra.seeds),
                                              len(rb.seeds), *judged_values, claim.source, ra.oracle, rb.oracle))
            if not judged:
                where = " on " + " / ".join(x for x in (claim.stream, claim.profile) if x) if (
                    claim.stream or claim.profile) else ""
                text = pair_text(claim.metric, a, b) + where
                if text not in untested:
                    untested.append(text)
    named = {c.measurement for c in comparisons}
    return Findings(source, comparisons, untested, {k: v for k, v in (measurements or {}).items() if k in named})
