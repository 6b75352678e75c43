"""csv and LaTeX leaderboards read back to the numbers of the result files; the metrics plot stays readable."""
import csv

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.container import ErrorbarContainer

from cldiff_bench.cli import main
from cldiff_bench.leaderboard import (build_tables, load_results, mean_and_standard_error, parse_tex_cell,
                                      parse_tex_tabulars)
from cldiff_bench.leaderboard.formats import tex_cell
from cldiff_bench.leaderboard.render import crowded, max_overlap, metrics_figure

from .test_leaderboard import make_result, write

FINAL = {"naive": ([30.0, 34.0, 32.0], [0.40, 0.45, 0.50]), "gd": ([10.0, 12.0, 14.0], [0.70, 0.80, 0.75])}


@pytest.fixture
def results_dir(tmp_path):
    for strategy, (fids, accs) in FINAL.items():
        for seed, (fid, acc) in enumerate(zip(fids, accs)):
            write(tmp_path / "results", make_result(strategy, seed, {"fid": fid, "accuracy": acc, "kld": 1e-5 * fid},
                                                    wall=60.0 if strategy == "naive" else 90.0))
    # a second stream: one table each, one csv row each
    write(tmp_path / "results" / "other", make_result("gd", 0, {"fid": 5.0}, stream="fmnist-5"))
    return tmp_path / "results"


def claims(tmp_path):
    path = tmp_path / "claims.toml"
    path.write_text('[[claim]]\nmetric = "fid"\norder = ["gd", "naive"]\nsource = "s"\n'
                    '[[claim]]\nmetric = "accuracy"\norder = ["naive", "gd"]\n')
    return path


def test_csv_round_trip(results_dir, tmp_path):
    out = tmp_path / "board"
    assert main(["leaderboard", str(results_dir), "--out", str(out), "--format", "csv", "--claims",
                 str(claims(tmp_path))]) == 0
    rows = list(csv.DictReader((out / "leaderboard.csv").open()))
    assert [(r["stream"], r["profile"], r["strategy"]) for r in rows] == [
        ("digits-5", "tiny", "gd"), ("digits-5", "tiny", "naive"), ("fmnist-5", "tiny", "gd")]
    gd = rows[0]
    for metric, values in (("fid", FINAL["gd"][0]), ("accuracy", FINAL["gd"][1]),
                           ("kld", [1e-5 * v for v in FINAL["gd"][0]])):
        mean, se = mean_and_standard_error(values)
        # full precision, not the page's 2 significant digits of the s.e.
        assert float(gd[f"{metric}_mean"]) == pytest.approx(mean, rel=1e-12)
        assert float(gd[f"{metric}_se"]) == pytest.approx(se, rel=1e-12)
        assert gd[f"{metric}_n"] == "3"
    assert gd["ard_mean"] == gd["ard_se"] == gd["ard_n"] == ""  # not measured
    assert float(gd["wall_seconds"]) == 90.0 and float(gd["training_nfe"]) == 2500.0
    assert float(gd["time_vs_naive"]) == 1.5 and gd["kind"] == "run" and gd["seeds"] == "3"
    single = rows[2]
    assert single["fid_se"] == "" and single["fid_n"] == "1" and single["time_vs_naive"] == ""

    found = list(csv.DictReader((out / "findings.csv").open()))
    assert [(f["claim"], f["verdict"]) for f in found] == [("FID: gd < naive", "holds"),
                                                           ("Accuracy: naive > gd", "contradicted")]
    assert float(found[0]["better_mean"]) == 12.0 and float(found[0]["worse_mean"]) == 32.0
    assert float(found[0]["advantage"]) == 20.0 and found[0]["source"] == "s" and found[0]["better_n"] == "3"
    assert not list(out.glob(".*.tmp"))  # written through a temporary file, nothing left behind


def test_latex_round_trip(results_dir, tmp_path):
    out = tmp_path / "board"
    assert main(["leaderboard", str(results_dir), "--out", str(out), "--format", "latex", "--claims",
                 str(claims(tmp_path))]) == 0
    text = (out / "leaderboard.tex").read_text()
    assert text.count(r"\begin{tabular}") == 3  # two leaderboard tables and the findings
    assert r"\toprule" in text and r"\bottomrule" in text
    (header, body), _, (f_header, f_body) = parse_tex_tabulars(text)
    assert header[:6] == ["Strategy", "Seeds", r"FID $\downarrow$", r"KLD $\downarrow$", r"Accuracy $\uparrow$",
                          "Wall time (min)"]
    rows = {r[0]: dict(zip(header, r)) for r in body}
    assert parse_tex_cell(rows["gd"][r"FID $\downarrow$"]) == pytest.approx((12.0, 1.2))  # s.e. 1.155, 2 digits
    assert rows["gd"][r"FID $\downarrow$"].startswith(r"$\mathbf{")  # best FID in bold
    assert rows["gd"][r"Accuracy $\uparrow$"].startswith(r"$\mathbf{")  # highest accuracy in bold
    assert rows["naive"][r"FID $\downarrow$"] == r"$32 \pm 1.2$"
    kld_mean, kld_se = parse_tex_cell(rows["gd"][r"KLD $\downarrow$"])  # 1.2e-04, written as 1.2\times10^{-4}
    assert kld_mean == pytest.approx(1.2e-4) and kld_se == pytest.approx(1.2e-5)
    assert rows["gd"][r"Time $\times$ naive"] == "1.50"
    assert f_header[2] == "Claim"
    verdicts = {r[2]: (r[5], r[6]) for r in f_body}
    assert verdicts == {r"FID: gd $<$ naive": (r"$<$ 0.001", "holds"),
                        r"Accuracy: naive $>$ gd": (r"$>$ 0.999", "contradicted")}


def test_latex_cells_escape_and_parse():
    assert tex_cell(12.0, None, oracle=True) == r"$12$ $\pm$ --"
    assert parse_tex_cell(tex_cell(12.0, None, oracle=True)) == (12.0, None)
    assert parse_tex_cell(tex_cell(3.25e-7, 1e-8, best=True)) == (3.25e-7, 1e-8)


def _rows(n, spread):
    """n strategies per panel; `spread` apart in FID, each with s.e. 1."""
    docs = []
    for i in range(n):
        for seed, d in enumerate((-1.7320508, 0.0, 1.7320508)):  # s.e. of these three is 1
            docs.append(make_result(f"s{i}", seed, {"fid": 10.0 + spread * i + d}))
    return docs


@pytest.mark.parametrize("n, spread, bars", [(4, 0.5, True), (4, 10.0, False), (3, 0.5, False)])
def test_error_bars_replace_bands_when_more_than_three_rows_overlap(tmp_path, n, spread, bars):
    for doc in _rows(n, spread):
        write(tmp_path, doc)
    (table,) = build_tables(load_results([tmp_path])[0])
    assert crowded(table.rows, "fid") == bars
    fig = metrics_figure(table)
    ax = fig.axes[0]
    has_bars = any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    has_bands = any(isinstance(c, PolyCollection) for c in ax.collections)
    assert (has_bars, has_bands) == (bars, not bars)
    # one legend for the figure, outside the panels, naming every row once
    assert all(a.get_legend() is None for a in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [f"s{i}" for i in range(n)]


def test_max_overlap_counts_intervals_sharing_a_point():
    assert max_overlap([(0, 1), (2, 3)]) == 1
    assert max_overlap([(0, 1), (1, 2)]) == 2  # closed intervals: touching counts
    assert max_overlap([(0, 2), (1, 3), (1.5, 1.5), (2, 4)]) == 3
    assert max_overlap([]) == 0
