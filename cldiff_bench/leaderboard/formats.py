"""The leaderboard as data (`leaderboard.csv`, `findings.csv`) and as LaTeX (`leaderboard.tex`, booktabs).

The csv keeps full precision (Python's shortest round-trip float text) so that other tools read the same numbers the
page rounds; empty cells are values that do not exist (a metric not measured, the s.e. of a single seed, the cost
of the real-data row, which trains nothing). The LaTeX prints what the markdown page prints.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from ..io import atomic_write_bytes
from .aggregate import METRICS, NAMES, Table
from .claims import Findings, pair_text
from .render import best_values, relative_time, render, settings_phrase, test_text

FORMATS = ("markdown", "csv", "latex")
LEADERBOARD_CSV, FINDINGS_CSV, LEADERBOARD_TEX = "leaderboard.csv", "findings.csv", "leaderboard.tex"
ARROWS_TEX = {True: r"$\downarrow$", False: r"$\uparrow$"}


def _num(x) -> str:
    return "" if x is None else repr(float(x))


def _csv_bytes(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode()


def leaderboard_csv(tables: list[Table]) -> bytes:
    header = ["stream", "profile", "strategy", "kind", "seeds"]
    for m in METRICS:
        header += [f"{m}_mean", f"{m}_se", f"{m}_n"]
    header += ["wall_seconds", "training_nfe", "time_vs_naive", "flags"]
    rows = []
    for t in tables:
        for r in t.rows:
            row = [t.stream, t.profile, r.strategy, r.kind, len(r.seeds)]
            for m in METRICS:
                mean, se = r.final.get(m, (None, None))
                row += [_num(mean), _num(se), len(r.seeds) if m in r.final else ""]
            cost = [] if r.oracle else [r.wall_seconds, r.training_nfe]
            row += [_num(v) for v in cost] or ["", ""]
            row += [_num(relative_time(r, t)), " ".join(r.flags)]
            rows.append(row)
    return _csv_bytes(header, rows)


def findings_csv(findings: Findings) -> bytes:
    header = ["stream", "profile", "metric", "claim", "better", "worse", "better_mean", "better_se", "better_n",
              "worse_mean", "worse_se", "worse_n", "advantage", "combined_se", "t", "df", "p_one_sided", "verdict",
              "source", "test"]
    rows = [[c.stream, c.profile, c.metric, c.text, c.better, c.worse, _num(c.better_value[0]),
             _num(c.better_value[1]), c.better_n, _num(c.worse_value[0]), _num(c.worse_value[1]), c.worse_n,
             _num(c.advantage), _num(c.combined_se), _num(c.t), _num(c.df), _num(c.p_value), c.verdict,
             c.source or "", f"paired ({c.measurement})" if c.paired else "welch"] for c in findings.comparisons]
    return _csv_bytes(header, rows)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$", ">": r"$>$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(c, c) for c in str(text))


def _tex_number(x: float, spec: str) -> str:
    text = format(x, spec)
    if "e" in text:  # 1.2e-05 -> 1.2\times10^{-5}
        mantissa, exponent = text.split("e")
        return rf"{mantissa}\times10^{{{int(exponent)}}}"
    return text


def tex_cell(mean: float, se: float | None, best: bool = False, oracle: bool = False) -> str:
    if se is None:
        return f"${_tex_number(mean, '.4g')}$ $\\pm$ {'--' if oracle else 'n/a'}"
    body = rf"{_tex_number(mean, '.4g')} \pm {_tex_number(se, '.2g')}"
    return rf"$\mathbf{{{body}}}$" if best else f"${body}$"


def parse_tex_cell(text: str) -> tuple[float, float | None]:
    """The inverse of `tex_cell` (to the printed precision)."""
    plain = re.sub(r"\\times10\^\{(-?\d+)\}", r"e\1", text)
    plain = plain.replace(r"\mathbf{", "").replace("}", "").replace("$", "")
    mean, _, se = (p.strip() for p in plain.partition(r"\pm"))
    return float(mean), None if se in ("--", "n/a") else float(se)


def _tabular(columns: str, header: list[str], blocks: list[list[list[str]]]) -> list[str]:
    """A booktabs tabular; each block is a group of rows, separated by \\midrule."""
    lines = [rf"\begin{{tabular}}{{{columns}}}", r"\toprule", " & ".join(header) + r" \\"]
    for block in blocks:
        if block:
            lines.append(r"\midrule")
            lines += [" & ".join(row) + r" \\" for row in block]
    return lines + [r"\bottomrule", r"\end{tabular}"]


def table_latex(table: Table) -> list[str]:
    metrics = [m for m in METRICS if any(m in r.final for r in table.rows)]
    best = best_values(table)
    header = ["Strategy", "Seeds"] + [f"{NAMES[m]} {ARROWS_TEX[METRICS[m]]}" for m in metrics] + [
        "Wall time (min)", "Training NFEs (M)", r"Time $\times$ naive"]
    runs, floor = [], []
    for r in table.rows:
        cells = [tex_escape(r.name + (" " + " ".join(r.flags) if r.flags else "")), str(len(r.seeds))]
        cells += [tex_cell(*r.final[m], best=not r.oracle and r.final[m][0] == best.get(m), oracle=r.oracle)
                  if m in r.final else "--" for m in metrics]
        rel = relative_time(r, table)
        if r.oracle:  # trains nothing: no cost to compare
            cells += ["--"] * 3
        else:
            cells += [f"{r.wall_seconds / 60:.1f}", f"{r.training_nfe / 1e6:.2f}",
                      f"{rel:.2f}" if rel is not None else "--"]
        (floor if r.oracle else runs).append(cells)
    caption = (f"{tex_escape(table.stream)}, profile \\texttt{{{tex_escape(table.profile)}}}: metrics after the "
               f"last task, mean $\\pm$ standard error over seeds (best in bold). "
               + tex_escape(settings_phrase(table).replace("`", "")))
    return [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{caption}}}",
            rf"\label{{tab:cldiff-{re.sub(r'[^a-z0-9]+', '-', f'{table.stream}-{table.profile}'.lower())}}}",
            *_tabular("l" + "r" * (len(header) - 1), header, [runs, floor]), r"\end{table}"]


def findings_latex(findings: Findings) -> list[str]:
    rows = [[tex_escape(c.stream), tex_escape(c.profile), tex_escape(pair_text(c.metric, c.better, c.worse)),
             tex_cell(*c.better_value, oracle=c.better_oracle), tex_cell(*c.worse_value, oracle=c.worse_oracle),
             tex_escape(test_text(c)[1]), c.verdict, tex_escape(c.source or "")]
            for c in findings.comparisons]
    caption = ("Findings: each adjacent pair of a claim, by a one-sided Welch t-test over the seeds: \\emph{holds} "
               "when $p < 0.05$, \\emph{contradicted} when $p > 0.95$, \\emph{undecided} otherwise, n/a with "
               "fewer than 2 seeds (a paired t-test between samples of a measurement beside the runs). Claims from "
               + tex_escape(findings.source.replace("`", "")) + ".")
    return [r"\begin{table}[htbp]", r"\centering", rf"\caption{{{caption}}}", r"\label{tab:cldiff-findings}",
            *_tabular("lllrrrll", ["Stream", "Profile", "Claim", "Claimed better", "Claimed worse", "$p$",
                                   "Verdict", "Source"], [rows]), r"\end{table}"]


def leaderboard_latex(tables: list[Table], findings: Findings | None, command: str | None = None) -> bytes:
    lines = ["% cldiff-bench leaderboard, generated from result files" + (f" by: {command}" if command else ""),
             r"% needs \usepackage{booktabs}"]
    for table in tables:
        lines += [""] + table_latex(table)
    if findings is not None and findings.comparisons:
        lines += [""] + findings_latex(findings)
    return ("\n".join(lines) + "\n").encode()


def parse_tex_tabulars(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every tabular in `text`, cells stripped (for tests and tools)."""
    out = []
    for body in re.findall(r"\\toprule\n(.*?)\\bottomrule", text, re.S):
        lines = [l.strip() for l in body.splitlines() if l.strip() and l.strip() != r"\midrule"]
        cells = [[c.strip() for c in re.split(r"(?<!\\)&", l.removesuffix(r"\\").strip())] for l in lines]
        out.append((cells[0], cells[1:]))
    return out


def publish(fmt: str, tables: list[Table], out_dir: Path, skipped: list[str], findings: Findings | None,
            command: str | None = None, produced_by: list[str] | None = None) -> list[Path]:
    """Write the leaderboard in one format into `out_dir`; returns the files written."""
    out_dir = Path(out_dir)
    if fmt == "markdown":
        return [render(tables, out_dir, skipped, command, produced_by, findings)]
    if fmt == "csv":
        paths = [(out_dir / LEADERBOARD_CSV, leaderboard_csv(tables))]
        if findings is not None:
            paths.append((out_dir / FINDINGS_CSV, findings_csv(findings)))
    elif fmt == "latex":
        paths = [(out_dir / LEADERBOARD_TEX, leaderboard_latex(tables, findings, command))]
    else:
        raise ValueError(f"unknown format {fmt!r}")
    for path, data in paths:
        atomic_write_bytes(path, data)
    return [p for p, _ in paths]
