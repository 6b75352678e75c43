"""The leaderboard as markdown (tabulate) with PNG plots and sample grids beside it."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from tabulate import tabulate

from ..io import atomic_write_bytes
from .aggregate import METRICS, NAMES, Row, Table
from .claims import Findings

ARROWS = {True: "↓", False: "↑"}
NO_SE = "–"  # the real-data row: one measurement, not a mean over seeds
CELL = re.compile(r"^\**(?P<mean>-?[\d.eE+-]+) ± (?P<se>[\d.eE+-]+|n/a|–)\**$")
# More rows than this whose error ranges overlap at one task make filled bands unreadable: draw error bars.
MAX_BANDS = 3


def format_cell(mean: float, se: float | None, best: bool, oracle: bool = False) -> str:
    text = f"{mean:.4g} ± {se:.2g}" if se is not None else f"{mean:.4g} ± {NO_SE if oracle else 'n/a'}"
    return f"**{text}**" if best else text


def parse_cell(text: str) -> tuple[float, float | None]:
    """The inverse of `format_cell` (to the printed precision)."""
    m = CELL.match(text.strip())
    if not m:
        raise ValueError(f"not a leaderboard cell: {text!r}")
    return float(m["mean"]), None if m["se"] in ("n/a", NO_SE) else float(m["se"])


def best_values(table: Table) -> dict[str, float]:
    """The best final mean per metric among the runs (the real-data row is a floor, not a contender)."""
    best = {}
    for m in METRICS:
        values = [r.final[m][0] for r in table.rows if m in r.final and not r.oracle]
        if values:
            best[m] = (min if METRICS[m] else max)(values)
    return best


def relative_time(row: Row, table: Table) -> float | None:
    naive = next((r for r in table.rows if r.strategy == "naive" and not r.oracle), None)
    if row.oracle or not naive or not naive.wall_seconds:
        return None
    return row.wall_seconds / naive.wall_seconds


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def model_size_phrase(model: dict) -> str:
    """' (1.09M parameters)', counted from the U-Net configuration the results record."""
    from ..diffusion.unet import UNet, UNetConfig, count_parameters
    try:
        cfg = UNetConfig.from_dict({k: v for k, v in model.items() if k != "preset"})
    except (TypeError, KeyError, ValueError):
        return ""  # a configuration this version cannot build: say nothing rather than guess
    with torch.device("meta"):
        return f" ({count_parameters(UNet(cfg)) / 1e6:.2f}M parameters)"


def budget_phrase(budget: dict) -> str:
    """How long each task trains, in the units the profile fixes."""
    length = (f"{budget['iterations']} iterations" if budget.get("iterations")
              else f"{budget['epochs']:g} epochs")
    rate = f", learning rate {budget['learning_rate']:g}" if budget.get("learning_rate") else ""
    if budget.get("lr_schedule", "constant") != "constant":
        rate += f" ({budget['lr_schedule']}, {budget.get('warmup_iterations', 0)}-iteration warm-up)"
    ema = f", sampled from an EMA of the weights (decay {budget['ema_decay']:g})" if budget.get("ema_decay") else ""
    size = f", images at {budget['image_size']} x {budget['image_size']}" if budget.get("image_size") else ""
    calibrated = (f" (the `{budget['profile']}` profile as calibrated for {budget['calibrated_for']})"
                  if budget.get("calibrated_for") else "")
    return f"{length} per task at batch {budget['batch_size']}{rate}{ema}{size}{calibrated}"


def table_markdown(table: Table) -> str:
    metrics = [m for m in METRICS if any(m in r.final for r in table.rows)]
    best = best_values(table)
    headers = ["strategy", "seeds"] + [f"{NAMES[m]} {ARROWS[METRICS[m]]}" for m in metrics] + [
        "wall time (min)", "training NFEs (M)", "time × naive"]
    body = []
    for r in table.rows:
        cells = [r.name + (" " + " ".join(r.flags) if r.flags else ""), str(len(r.seeds))]
        for m in metrics:
            if m not in r.final:
                cells.append("-")
                continue
            cells.append(format_cell(*r.final[m], best=not r.oracle and r.final[m][0] == best.get(m),
                                     oracle=r.oracle))
        rel = relative_time(r, table)
        if r.oracle:  # trains nothing: no cost to compare
            cells += [NO_SE, NO_SE, NO_SE]
        else:
            cells += [f"{r.wall_seconds / 60:.1f}", f"{r.training_nfe / 1e6:.2f}",
                      f"{rel:.2f}" if rel is not None else "-"]
        body.append(cells)
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else "> 0.999" if p > 0.999 else f"{p:.3f}"


def test_text(c) -> tuple[str, str]:
    """Welch's t with its degrees of freedom, and the one-sided p, as the Findings show them."""
    if c.p_value is None:
        return "n/a", "n/a"
    return f"{c.t:.2f} ({c.df:.0f}, paired)" if c.paired else f"{c.t:.2f} ({c.df:.1f})", p_text(c.p_value)


def findings_markdown(findings: Findings, table: Table) -> str | None:
    comparisons = findings.for_table(table)
    if not comparisons:
        return None
    body = [[c.text, format_cell(*c.better_value, best=False, oracle=c.better_oracle),
             format_cell(*c.worse_value, best=False, oracle=c.worse_oracle), f"{c.advantage:.3g}", *test_text(c),
             f"**{c.verdict}**" if c.verdict == "contradicted" else c.verdict, (c.source or "").replace("|", "\\|")]
            for c in comparisons]
    table_text = tabulate(body, headers=["claim", "claimed better", "claimed worse", "advantage", "t (df)",
                                         "p, one-sided", "verdict", "source"], tablefmt="github",
                          disable_numparse=True)
    measured = sorted({c.measurement for c in comparisons if c.measurement})
    notes = [f"Measurement `{name}` (seeds {', '.join(map(str, m.seeds))}): {m.title} Made by `{m.command}`."
             for name in measured for m in [findings.measurements[name]]]
    return "\n\n".join([table_text, *notes])


def little_signal_warning(findings: Findings, table: Table) -> str | None:
    """One paragraph under a table whose bounds the test does not separate on some metric, so that no reader takes
    that metric's ranking for a result."""
    level = findings.unseparated_bounds(table)
    if not level:
        return None
    names = [NAMES[c.metric] for c in level]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    tests = ", ".join(f"{NAMES[c.metric]} p = {c.p_value:.2f}" for c in level)
    return (f"**Little signal on {listed}.** The upper bound (joint) is not shown better than the lower bound (naive) "
            f"on {'this metric' if len(level) == 1 else 'these metrics'} ({tests}; see the Findings): here the table "
            f"cannot tell a strategy that remembers from one that forgets, so its ranking there is no evidence for "
            f"or against a method. More seeds may separate the bounds; if they stay level, the budget is too small "
            f"for the metric.")


FINDINGS_HEADING = "### Findings"
FINDINGS_INTRO = (
    "Each adjacent pair of a claim, judged from the table above by a one-sided Welch t-test over the seeds: the "
    "advantage is the claimed-better row's lead in the metric's units (positive in the claim's direction), t its "
    "ratio to the combined standard error sqrt(se_a² + se_b²) with Welch-Satterthwaite degrees of freedom, p the "
    "chance of a lead at least this large were the claimed-better row no better. `holds` when p < 0.05, "
    "`contradicted` when p > 0.95 (the other row is better at the same level), `undecided` in between, `n/a` when a "
    "row has fewer than 2 seeds. The real-data row's s.e. counts as 0 (a one-sample test). A claim between samples "
    "of a measurement beside the runs (marked paired) is tested on its per-seed differences. An undecided claim "
    "needs more seeds, not a looser rule.")


def parse_markdown_table(markdown: str, after: str | None = None) -> list[dict[str, str]]:
    """Rows of the first GitHub table in `markdown` (or the first after the line `after`) as {header: cell}."""
    all_lines = markdown.splitlines()
    if after is not None:
        all_lines = all_lines[all_lines.index(after) + 1:]
    lines = []
    for line in all_lines:  # the first contiguous block of table lines
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break

    def cells(line: str) -> list[str]:
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().removeprefix("|").removesuffix("|"))]

    headers = cells(lines[0])
    return [dict(zip(headers, cells(line))) for line in lines[2:]]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most closed intervals [lo, hi] that share one point."""
    events = sorted([(lo, 0) for lo, _ in intervals] + [(hi, 1) for _, hi in intervals])  # starts before ends
    depth = most = 0
    for _, end in events:
        depth += -1 if end else 1
        most = max(most, depth)
    return most


def crowded(rows: list[Row], metric: str) -> bool:
    """Whether more than MAX_BANDS rows' mean ± s.e. ranges overlap after some task."""
    series = [r.per_task[metric] for r in rows]
    for k in range(max((len(s) for s in series), default=0)):
        ranges = [(s[k][0] - (s[k][1] or 0.0), s[k][0] + (s[k][1] or 0.0)) for s in series if k < len(s)]
        if max_overlap(ranges) > MAX_BANDS:
            return True
    return False


def metrics_figure(table: Table):
    """One panel per metric, one shared legend outside the panels (a legend inside would hide the curves)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(m in r.per_task for r in table.rows)]
    runs = [r for r in table.rows if not r.oracle]
    colour = {r.strategy: f"C{i % 10}" for i, r in enumerate(runs)}  # one colour per row in every panel
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 1.6, 3.6), squeeze=False,
                             layout="constrained")
    handles: dict[str, object] = {}
    for ax, m in zip(axes[0], metrics):
        drawn = [r for r in runs if m in r.per_task]
        bars = crowded(drawn, m)
        width = 0.3  # error bars side by side within +-0.15 of the task, so that they do not hide each other
        for i, r in enumerate(drawn):
            means = [v[0] for v in r.per_task[m]]
            ses = [v[1] or 0.0 for v in r.per_task[m]]
            tasks = list(range(1, len(means) + 1))
            if bars:
                dx = (i / (len(drawn) - 1) - 0.5) * width if len(drawn) > 1 else 0.0
                handle = ax.errorbar([t + dx for t in tasks], means, yerr=ses, marker="o", markersize=3,
                                     capsize=2, color=colour[r.strategy], label=r.name)
            else:
                (handle,) = ax.plot(tasks, means, marker="o", color=colour[r.strategy], label=r.name)
                ax.fill_between(tasks, [a - b for a, b in zip(means, ses)], [a + b for a, b in zip(means, ses)],
                                color=colour[r.strategy], alpha=0.2)
            handles.setdefault(r.name, handle)
        for r in table.rows:
            if r.oracle and m in r.per_task:
                means = [v[0] for v in r.per_task[m]]
                (handle,) = ax.plot(range(1, len(means) + 1), means, linestyle="--", color="black", label=r.name)
                handles.setdefault(r.name, handle)
        ax.set_title(f"{NAMES[m]} ({'lower' if METRICS[m] else 'higher'} is better)")
        ax.set_xlabel("after task")
        ax.set_xticks(range(1, max(len(r.per_task[m]) for r in table.rows if m in r.per_task) + 1))
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    fig.suptitle(f"{table.stream}, profile {table.profile}: mean ± standard error over seeds")
    return fig


def plot_metrics(table: Table, path: Path) -> None:
    import matplotlib.pyplot as plt
    fig = metrics_figure(table)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def copy_final_sample_sheets(table: Table, folder: Path) -> list[tuple[str, str, int]]:
    """The last task's sample grid of each strategy's lowest seed (a fixed rule, never a chosen seed)."""
    out = []
    for r in table.rows:
        first = r.results[0]
        grid = first.path.parent / first.doc["tasks"][-1].get("sample_grid", "")
        if grid.is_file():
            name = f"{_slug(table.stream)}-{_slug(table.profile)}-{_slug(r.strategy)}-seed{first.seed}.png"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(grid, folder / name)
            out.append((r.name, name, first.seed))
    return out


def settings_phrase(table: Table) -> str:
    """The budget and evaluation settings the table's rows share."""
    s = table.settings
    scoring = (f"FID features `{s['extractor']}`, {s['generated samples']} generated samples with "
               f"{s['metric sampling steps']} DDIM steps; suite {s['suite version']}.")
    if not s["model"]:  # only a real-data result: no training budget to state
        return "Real data only; " + scoring
    return (f"Model `{s['budget']['model']}`{model_size_phrase(s['model'])}, {budget_phrase(s['budget'])}, "
            f"precision {s['precision']}; " + scoring)


def render(tables: list[Table], out_dir: Path, skipped: list[str], command: str | None = None,
           produced_by: list[str] | None = None, findings: Findings | None = None) -> Path:
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    parts = ["# cldiff-bench leaderboard", "",
             "Metrics after the last task: mean ± standard error over seeds (ddof = 1), the best value per column in "
             "bold; ↓ lower is better, ↑ higher is better. Training NFEs count U-Net evaluations of single images "
             "(student forward and backward, teacher forward) during training. A `real data` row scores held-out "
             "real images as if they were generated: the floor of the metrics, not ranked. Generated from result "
             "files by `cldiff-bench leaderboard`; every number is traceable to a file in `results/`."]
    if produced_by and len(produced_by) == 1:
        parts += ["", f"Results produced by: `{produced_by[0]}`"]
    elif produced_by:
        parts += ["", "Results produced by:", ""] + [f"- `{line}`" for line in produced_by]
    if command:
        parts += ["", f"Page built by: `{command}`"]
    if findings is not None:
        parts += ["", f"Findings check the claims in {findings.source} against each table below."]
    for table in tables:
        slug = f"{_slug(table.stream)}-{_slug(table.profile)}"
        parts += ["", f"## {table.stream}, profile `{table.profile}`", "", settings_phrase(table), ""]
        if table.profile != "paper":
            parts += ["This is not the study's budget (see the `paper` profile); rankings at this budget need not "
                      "match the paper's.", ""]
        parts += [table_markdown(table), ""]
        parts += [f"- {n}" for n in table.notes]
        warning = little_signal_warning(findings, table) if findings is not None else None
        if warning:
            parts += ([""] if table.notes else []) + [warning, ""]
        plot = out_dir / "plots" / f"{slug}-metrics.png"
        if any(r.per_task for r in table.rows):  # runs without evaluation have nothing to plot
            plot_metrics(table, plot)
            parts += [f"![metrics after every task](plots/{plot.name})", ""]
        parts += ["Samples after the last task:", ""]
        grids = copy_final_sample_sheets(table, out_dir / "plots")
        if grids:
            parts += ["| " + " | ".join(g[0] for g in grids) + " |", "|" + "---|" * len(grids),
                      "| " + " | ".join(f"![{g[0]} seed {g[2]}](plots/{g[1]})" for g in grids) + " |"]
        found = findings_markdown(findings, table) if findings is not None else None
        if found:
            parts += ["", FINDINGS_HEADING, "", FINDINGS_INTRO, "", found]
    if findings is not None and findings.untested:
        parts += ["", "## Claims not tested", "", "No table here has both rows, with the metric, for:", ""]
        parts += [f"- {text}" for text in findings.untested]
    if skipped:
        parts += ["", "## Skipped files", ""] + [f"- {line}" for line in skipped]
    path = out_dir / "README.md"
    atomic_write_bytes(path, ("\n".join(parts) + "\n").encode())
    return path
