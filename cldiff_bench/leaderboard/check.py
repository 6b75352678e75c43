"""`cldiff-bench check RESULT --against REFERENCE`: a regression check with one-sided tolerances.

A metric fails when it is worse than the reference by more than its tolerance (abs + rel * |reference|), in the
direction that is worse for it; being better never fails. Results of different configurations are not compared.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .aggregate import METRICS

# (absolute, relative) slack in the worse direction, sized for run-to-run and machine-to-machine float differences
# of the tiny configurations used as CI checks.
DEFAULT_TOLERANCES = {"fid": (0.0, 0.25), "kld": (0.5, 0.25), "ard": (0.1, 0.0), "accuracy": (0.1, 0.0)}


@dataclass
class Finding:
    metric: str
    task: int
    value: float
    reference: float
    limit: float
    ok: bool


def parse_tolerances(items: list[str]) -> dict[str, tuple[float, float]]:
    """["fid=0.1", "kld=0.5+20%"]: absolute, or absolute + relative (a number followed by %)."""
    out = dict(DEFAULT_TOLERANCES)
    for item in items:
        name, _, spec = item.partition("=")
        if name not in METRICS or not spec:
            raise UserError(f"--tolerance {item!r}: expected METRIC=ABS or METRIC=ABS+REL%, metric one of "
                            f"{', '.join(METRICS)}")
        absolute, relative = 0.0, 0.0
        try:
            for part in spec.split("+"):
                if part.endswith("%"):
                    relative = float(part[:-1]) / 100
                else:
                    absolute = float(part)
        except ValueError:
            raise UserError(f"--tolerance {item!r}: not a number")
        if absolute < 0 or relative < 0:
            raise UserError(f"--tolerance {item!r}: tolerances are >= 0")
        out[name] = (absolute, relative)
    return out


def compare(result: dict, reference: dict, tolerances: dict[str, tuple[float, float]],
            all_tasks: bool = False) -> list[Finding]:
    for key in ("stream", "strategy", "seed", "budget", "strategy_options", "model"):
        if result["config"].get(key) != reference["config"].get(key):
            raise UserError(f"the result and the reference differ in {key}: "
                            f"{result['config'].get(key)!r} vs {reference['config'].get(key)!r}")
    findings = []
    for metric, lower_better in METRICS.items():
        ref_values, values = reference["metrics"].get(metric), result["metrics"].get(metric)
        if ref_values is None:
            continue
        if values is None:
            raise UserError(f"the reference has {metric}, the result does not")
        if len(values) != len(ref_values):
            raise UserError(f"the result has {metric} for {len(values)} tasks, the reference for {len(ref_values)}")
        tasks = range(len(ref_values)) if all_tasks else [len(ref_values) - 1]
        absolute, relative = tolerances[metric]
        for k in tasks:
            if ref_values[k] is None:  # not measured in the reference: nothing to hold the result to
                continue
            if values[k] is None:
                raise UserError(f"the reference has {metric} after task {k}, the result does not")
            slack = absolute + relative * abs(ref_values[k])
            limit = ref_values[k] + slack if lower_better else ref_values[k] - slack
            ok = values[k] <= limit if lower_better else values[k] >= limit
            findings.append(Finding(metric, k, values[k], ref_values[k], limit, ok))
    if not findings:  # a check of nothing must not read as a pass
        raise UserError("the reference holds no metric values to compare against")
    return findings


def report(findings: list[Finding]) -> str:
    from tabulate import tabulate
    rows = [[f.metric, f.task, f"{f.value:.4g}", f"{f.reference:.4g}",
             f"{'<=' if METRICS[f.metric] else '>='} {f.limit:.4g}", "ok" if f.ok else "WORSE"] for f in findings]
    failed = sum(not f.ok for f in findings)
    verdict = "PASS" if not failed else f"FAIL: {failed} metric(s) worse than the reference beyond tolerance"
    return tabulate(rows, headers=["metric", "after task", "result", "reference", "allowed", ""]) + "\n" + verdict
