"""The leaderboard as markdown (tabulate) with PNG plots and sample grids beside it."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from tabulate import tabulate

from ..io import atomic_write_bytes
from .aggregate import METRICS, Table

ARROWS = {True: "↓", False: "↑"}
NAMES = {"fid": "FID", "kld": "KLD", "ard": "ARD", "accuracy": "Accuracy"}
CELL = re.compile(r"^\**(?P<mean>-?[\d.eE+-]+) ± (?P<se>[\d.eE+-]+|n/a)\**$")


def format_cell(mean: float, se: float | None, best: bool) -> str:
    text = f"{mean:.4g} ± {se:.2g}" if se is not None else f"{mean:.4g} ± n/a"
    return f"**{text}**" if best else text


def parse_cell(text: str) -> tuple[float, float | None]:
    """The inverse of `format_cell` (to the printed precision)."""
    m = CELL.match(text.strip())
    if not m:
        raise ValueError(f"not a leaderboard cell: {text!r}")
    return float(m["mean"]), None if m["se"] == "n/a" else float(m["se"])


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
    return f"{length} per task at batch {budget['batch_size']}{rate}"


def table_markdown(table: Table) -> str:
    metrics = [m for m in METRICS if any(m in r.final for r in table.rows)]
    best = {}
    for m in metrics:
        values = [r.final[m][0] for r in table.rows if m in r.final]
        best[m] = (min if METRICS[m] else max)(values)
    naive = next((r for r in table.rows if r.strategy == "naive"), None)
    headers = ["strategy", "seeds"] + [f"{NAMES[m]} {ARROWS[METRICS[m]]}" for m in metrics] + [
        "wall time (min)", "training NFEs (M)", "time × naive"]
    body = []
    for r in table.rows:
        cells = [r.strategy + (" " + " ".join(r.flags) if r.flags else ""), str(len(r.seeds))]
        for m in metrics:
            cells.append(format_cell(*r.final[m], best=r.final[m][0] == best[m]) if m in r.final else "-")
        cells += [f"{r.wall_seconds / 60:.1f}", f"{r.training_nfe / 1e6:.2f}",
                  f"{r.wall_seconds / naive.wall_seconds:.2f}" if naive and naive.wall_seconds else "-"]
        body.append(cells)
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def parse_markdown_table(markdown: str) -> list[dict[str, str]]:
    """Rows of the first GitHub table in `markdown` as {header: cell} (for tests and tools)."""
    lines = [l for l in markdown.splitlines() if l.startswith("|")]
    headers = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(headers, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def plot_metrics(table: Table, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(m in r.per_task for r in table.rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for r in table.rows:
            if m not in r.per_task:
                continue
            means = [v[0] for v in r.per_task[m]]
            ses = [v[1] or 0.0 for v in r.per_task[m]]
            tasks = list(range(1, len(means) + 1))
            ax.plot(tasks, means, marker="o", label=r.strategy)
            ax.fill_between(tasks, [a - b for a, b in zip(means, ses)], [a + b for a, b in zip(means, ses)],
                            alpha=0.2)
        ax.set_title(f"{NAMES[m]} ({'lower' if METRICS[m] else 'higher'} is better)")
        ax.set_xlabel("after task")
        ax.set_xticks(tasks)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{table.stream}, profile {table.profile}: mean ± standard error over seeds")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def copy_final_grids(table: Table, folder: Path) -> list[tuple[str, str, int]]:
    """The last task's sample grid of each strategy's lowest seed (a fixed rule, never a chosen seed)."""
    out = []
    for r in table.rows:
        first = r.results[0]
        grid = first.path.parent / first.doc["tasks"][-1].get("sample_grid", "")
        if grid.is_file():
            name = f"{_slug(table.stream)}-{_slug(table.profile)}-{_slug(r.strategy)}-seed{first.seed}.png"
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(grid, folder / name)
            out.append((r.strategy, name, first.seed))
    return out


def render(tables: list[Table], out_dir: Path, skipped: list[str], command: str | None = None,
           produced_by: str | None = None) -> Path:
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    parts = ["# cldiff-bench leaderboard", "",
             "Metrics after the last task: mean ± standard error over seeds (ddof = 1), the best value per column in "
             "bold; ↓ lower is better, ↑ higher is better. Training NFEs count U-Net evaluations of single images "
             "(student forward and backward, teacher forward) during training. Generated from result files by "
             "`cldiff-bench leaderboard`; every number is traceable to a file in `results/`."]
    if produced_by:
        parts += ["", f"Results produced by: `{produced_by}`"]
    if command:
        parts += ["", f"Page built by: `{command}`"]
    for table in tables:
        slug = f"{_slug(table.stream)}-{_slug(table.profile)}"
        s = table.settings
        parts += ["", f"## {table.stream}, profile `{table.profile}`", "",
                  f"Model `{s['budget']['model']}`{model_size_phrase(s['model'])}, {budget_phrase(s['budget'])}"
                  + f", precision {s['precision']}; FID features `{s['extractor']}`, {s['generated samples']} "
                  f"generated samples with {s['metric sampling steps']} DDIM steps; suite {s['suite version']}.",
                  ""]
        if table.profile != "paper":
            parts += ["This is not the study's budget (see the `paper` profile); rankings at this budget need not "
                      "match the paper's.", ""]
        parts += [table_markdown(table), ""]
        parts += [f"- {n}" for n in table.notes]
        plot = out_dir / "plots" / f"{slug}-metrics.png"
        plot_metrics(table, plot)
        parts += [f"![metrics after every task](plots/{plot.name})", "", "Samples after the last task:", ""]
        grids = copy_final_grids(table, out_dir / "plots")
        if grids:
            parts += ["| " + " | ".join(g[0] for g in grids) + " |", "|" + "---|" * len(grids),
                      "| " + " | ".join(f"![{g[0]} seed {g[2]}](plots/{g[1]})" for g in grids) + " |"]
    if skipped:
        parts += ["", "## Skipped files", ""] + [f"- {line}" for line in skipped]
    path = out_dir / "README.md"
    atomic_write_bytes(path, ("\n".join(parts) + "\n").encode())
    return path
