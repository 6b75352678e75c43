"""Findings: claims files are validated, and every verdict follows from the result files' numbers."""
import math

import numpy as np
import pytest
from scipy import stats

from cldiff_bench.cli import main
from cldiff_bench.errors import UserError
from cldiff_bench.leaderboard import (DEFAULT_CLAIMS, build_tables, check_claims, load_claims, load_results,
                                      parse_cell, parse_markdown_table)
from cldiff_bench.leaderboard.claims import Sample, verdict
from cldiff_bench.leaderboard.render import FINDINGS_HEADING

from .test_leaderboard import make_result, write

# Final FIDs per seed. a: mean 12, se 1.155; b: mean 22 (a clearly better); c: mean 13, se 0.289 (within noise of
# a); d: one seed (no s.e.).
FIDS = {"a": [10.0, 12.0, 14.0], "b": [20.0, 22.0, 24.0], "c": [12.5, 13.0, 13.5], "d": [11.0]}


@pytest.fixture
def results_dir(tmp_path):
    for strategy, fids in FIDS.items():
        for seed, fid in enumerate(fids):
            # accuracy falls with FID, so that "a > b" on accuracy holds too
            write(tmp_path / "results", make_result(strategy, seed, {"fid": fid, "accuracy": 1.0 - fid / 100}))
    return tmp_path / "results"


def claims_file(tmp_path, text, name="claims.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def judged(results_dir, claims_text, tmp_path):
    tables = build_tables(load_results([results_dir])[0])
    findings = check_claims(tables, load_claims(claims_file(tmp_path, claims_text)), "test claims")
    return {(c.metric, c.better, c.worse): c for c in findings.comparisons}, findings


def test_verdicts_from_the_result_files_numbers(results_dir, tmp_path):
    got, _ = judged(results_dir, """
[[claim]]
metric = "fid"
order = ["a", "b"]
[[claim]]
metric = "fid"
order = ["b", "a"]
[[claim]]
metric = "fid"
order = ["c", "a"]
[[claim]]
metric = "fid"
order = ["a", "d"]
[[claim]]
metric = "accuracy"
order = ["a", "b"]
""", tmp_path)
    se_a = math.sqrt(4 / 3)  # ddof-1 s.e. of 10, 12, 14
    ab = got[("fid", "a", "b")]
    assert ab.verdict == "holds"
    assert ab.advantage == pytest.approx(10.0) and ab.combined_se == pytest.approx(math.hypot(se_a, se_a))
    assert ab.better_value[0] == pytest.approx(12.0) and ab.worse_value[0] == pytest.approx(22.0)
    assert got[("fid", "b", "a")].verdict == "contradicted"
    assert got[("fid", "b", "a")].advantage == pytest.approx(-10.0)
    # c is worse than a by 1, less than the combined s.e. (~1.19): not decided either way (p about 0.8)
    assert got[("fid", "c", "a")].verdict == "undecided"
    assert got[("fid", "a", "d")].verdict == "n/a" and got[("fid", "a", "d")].combined_se is None
    # higher is better for accuracy: a (0.88) above b (0.78) holds
    assert got[("accuracy", "a", "b")].verdict == "holds"
    assert got[("accuracy", "a", "b")].advantage == pytest.approx(0.10)


def sample(values) -> Sample:
    values = np.asarray(values, dtype=float)
    return Sample(values.mean(), values.std(ddof=1) / math.sqrt(len(values)), len(values))


def test_verdict_is_a_one_sided_welch_test_on_the_seeds():
    better, worse = [10.0, 12.0, 15.0], [13.0, 17.0, 24.0, 20.0]
    advantage, se, t, df, p, word = verdict(True, sample(better), sample(worse))
    reference = stats.ttest_ind(better, worse, equal_var=False, alternative="less")
    assert advantage == pytest.approx(np.mean(worse) - np.mean(better))
    assert t == pytest.approx(-reference.statistic) and p == pytest.approx(reference.pvalue)
    assert df == pytest.approx(reference.df) and p < 0.05 and word == "holds"
    # higher is better: the same numbers claimed the other way round are contradicted, with p = 1 - p
    assert verdict(False, sample(better), sample(worse))[4:] == (pytest.approx(1 - p), "contradicted")


def test_one_standard_error_does_not_decide_with_three_seeds():
    # the old rule's threshold: a lead of just over one combined s.e.; at 2 to 4 degrees of freedom p is about 0.19
    _, se, _, _, p, word = verdict(True, Sample(10.0, 3.0, 3), Sample(15.01, 4.0, 3))
    assert se == pytest.approx(5.0) and 0.15 < p < 0.25 and word == "undecided"
    assert verdict(True, Sample(10.0, None, 1), Sample(50.0, 1.0, 3))[-1] == "n/a"


def test_the_real_data_floor_is_a_one_sample_test():
    runs = [0.9, 1.3, 1.1]
    floor = Sample(0.6, 0.0, 3)
    _, _, _, df, p, word = verdict(True, floor, sample(runs))
    reference = stats.ttest_1samp(runs, 0.6, alternative="greater")
    assert df == pytest.approx(2) and p == pytest.approx(reference.pvalue) and word == "holds"


def test_each_adjacent_pair_is_judged_once_and_missing_rows_are_listed_untested(results_dir, tmp_path):
    got, findings = judged(results_dir, """
[[claim]]
metric = "fid"
order = ["a", "c", "b"]
source = "chain"
[[claim]]
metric = "fid"
order = ["a", "c"]
source = "again"
[[claim]]
metric = "fid"
order = ["a", "nobody"]
[[claim]]
metric = "fid"
order = ["a", "b"]
stream = "fmnist-5"
[[claim]]
metric = "kld"
order = ["a", "b"]
""", tmp_path)
    assert set(got) == {("fid", "a", "c"), ("fid", "c", "b")}  # not a < b: the chain's pairs are adjacent only
    assert got[("fid", "a", "c")].source == "chain"  # stated twice, shown once under the first claim
    assert findings.untested == ["FID: a < nobody", "FID: a < b on fmnist-5", "KLD: a < b"]


def test_markdown_findings_table_reads_back(results_dir, tmp_path):
    claims = claims_file(tmp_path, '[[claim]]\nmetric = "fid"\norder = ["a", "b"]\nsource = "Table 1 | left"\n'
                                   '[[claim]]\nmetric = "fid"\norder = ["b", "c"]\n')
    out = tmp_path / "board"
    assert main(["leaderboard", str(results_dir), "--out", str(out), "--claims", str(claims)]) == 0
    text = (out / "README.md").read_text()
    rows = {r["claim"]: r for r in parse_markdown_table(text, after=FINDINGS_HEADING)}
    assert set(rows) == {"FID: a < b", "FID: b < c"}
    assert rows["FID: a < b"]["verdict"] == "holds"
    assert rows["FID: b < c"]["verdict"] == "**contradicted**"
    assert parse_cell(rows["FID: a < b"]["claimed better"]) == pytest.approx((12.0, 1.2), abs=0.01)
    assert parse_cell(rows["FID: a < b"]["claimed worse"])[0] == pytest.approx(22.0)
    assert rows["FID: a < b"]["source"] == r"Table 1 \| left"  # a '|' in free text does not split the row
    assert f"`{claims}`" in text


BOUNDS_CLAIMS = ('[[claim]]\nmetric = "fid"\norder = ["joint", "naive"]\n'
                 '[[claim]]\nmetric = "accuracy"\norder = ["joint", "naive"]\n')


@pytest.mark.parametrize("naive_fids, level", [([11.0, 13.0, 15.0], True), ([30.0, 32.0, 34.0], False)])
def test_a_table_whose_bounds_the_test_does_not_separate_says_so(tmp_path, naive_fids, level):
    # Accuracy separates the bounds either way; FID only when naive's FIDs are far from joint's 10, 12, 14.
    for strategy, fids, accuracies in (("joint", [10.0, 12.0, 14.0], [0.90, 0.91, 0.92]),
                                       ("naive", naive_fids, [0.10, 0.11, 0.12])):
        for seed, (fid, accuracy) in enumerate(zip(fids, accuracies)):
            write(tmp_path / "results", make_result(strategy, seed, {"fid": fid, "accuracy": accuracy}))
    out = tmp_path / "board"
    assert main(["leaderboard", str(tmp_path / "results"), "--out", str(out),
                 "--claims", str(claims_file(tmp_path, BOUNDS_CLAIMS))]) == 0
    text = (out / "README.md").read_text()
    verdicts = {r["claim"]: r["verdict"] for r in parse_markdown_table(text, after=FINDINGS_HEADING)}
    assert verdicts["Accuracy: joint > naive"] == "holds"
    assert verdicts["FID: joint < naive"] == ("undecided" if level else "holds")
    warnings = [line for line in text.splitlines() if line.startswith("**Little signal")]
    if level:
        assert len(warnings) == 1 and warnings[0].startswith("**Little signal on FID.**")
        assert "FID p = 0.29" in warnings[0] and "Accuracy" not in warnings[0]
    else:
        assert warnings == []


def test_no_claims_leaves_the_findings_out(results_dir, tmp_path):
    out = tmp_path / "board"
    assert main(["leaderboard", str(results_dir), "--out", str(out), "--no-claims", "--format", "csv"]) == 0
    assert (out / "leaderboard.csv").is_file() and not (out / "findings.csv").exists()
    assert main(["leaderboard", str(results_dir), "--out", str(out), "--no-claims"]) == 0
    assert FINDINGS_HEADING not in (out / "README.md").read_text()


def test_the_shipped_study_claims_load_and_state_the_reference_facts():
    claims = load_claims(DEFAULT_CLAIMS)
    pairs = {(c.metric, a, b, c.stream) for c in claims for a, b in c.pairs()}
    for metric in ("fid", "kld"):
        assert {(metric, "joint", "gd", None), (metric, "gd", "naive", None), (metric, "gd", "lwf", None),
                (metric, "lwf", "gr", None), (metric, "gd", "gaussian", None), (metric, "gaussian", "gr", None),
                (metric, "naive", "gr", "cifar10-5")} <= pairs
    assert {("accuracy", "joint", "gd", None), ("accuracy", "gd", "gr", None), ("accuracy", "gr", "naive", None),
            ("accuracy", "gd", "naive", None), ("ard", "joint", "naive", None), ("ard", "gd", "gr", None)} <= pairs
    # the bounds and the headline, each compared directly (not only through a chain of neighbours)
    assert {(m, "joint", "naive", None) for m in ("fid", "kld", "ard", "accuracy")} <= pairs
    assert {(m, "gd", "gr", None) for m in ("fid", "kld", "ard")} <= pairs


@pytest.mark.parametrize("text, problem", [
    ('[[claim]]\nmetric = "fid"\norder = ["a", "b"\n', "not valid TOML"),
    ('[[claim]]\nmetric = "is"\norder = ["a", "b"]\n', "metric 'is' is not one of fid, kld, ard, accuracy"),
    ('[[claim]]\nmetric = "fid"\norder = ["a"]\n', "needs at least 2"),
    ('[[claim]]\nmetric = "fid"\norder = ["a", "b"]\nstreams = "x"\n', "unknown key(s) 'streams'"),
    ('[[claims]]\nmetric = "fid"\norder = ["a", "b"]\n', "unknown top-level key(s) 'claims'"),
    ('[[claim]]\nmetric = "fid"\norder = "a, b"\n', "must be a list"),
    ('[[claim]]\nmetric = "fid"\norder = ["a", "a"]\n', "twice"),
    ('claim = 3\n', "array of tables"),
])
def test_a_malformed_claims_file_is_one_line_naming_it_and_writes_nothing(results_dir, tmp_path, capsys, text,
                                                                          problem):
    path = claims_file(tmp_path, text)
    with pytest.raises(UserError) as exc:
        load_claims(path)
    assert str(path) in str(exc.value) and problem in str(exc.value)
    out = tmp_path / "board"
    assert main(["leaderboard", str(results_dir), "--out", str(out), "--claims", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    assert not out.exists()


def test_a_missing_claims_file_is_an_input_error(results_dir, tmp_path, capsys):
    out = tmp_path / "board"
    assert main(["leaderboard", str(results_dir), "--out", str(out), "--claims", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.toml does not exist" in err
    assert not out.exists()


# A measurement beside the runs: per-seed FIDs whose seed effect (10 to 50) dwarfs the gap between its samples.
MEASURED = {"better@2": [12.0, 31.0, 52.0], "worse@2": [14.0, 33.5, 53.0], "level@2": [11.0, 33.0, 51.5]}
MEASURED_CLAIMS = """
[[claim]]
metric = "fid"
order = ["better@2", "worse@2"]
measurement = "decision"
source = "a measurement"
[[claim]]
metric = "fid"
order = ["level@2", "better@2", "missing@2"]
measurement = "decision"
"""


def measurement_file(folder, changes=None):
    import json

    from cldiff_bench.leaderboard.measurements import measurement_document
    doc = measurement_document("decision", "digits-5", "tiny", "A decision.", "python decide.py", [0, 1, 2],
                               {k: {"fid": v} for k, v in MEASURED.items()})
    doc.update(changes or {})
    (folder / "measurements").mkdir(parents=True, exist_ok=True)
    (folder / "measurements" / "decision.json").write_text(json.dumps(doc))


def test_a_measurements_samples_are_compared_by_a_paired_test_under_its_table(results_dir, tmp_path):
    measurement_file(results_dir)
    out = tmp_path / "board"
    assert main(["leaderboard", str(results_dir), "--out", str(out),
                 "--claims", str(claims_file(tmp_path, MEASURED_CLAIMS))]) == 0
    text = (out / "README.md").read_text()
    rows = {r["claim"]: r for r in parse_markdown_table(text, after=FINDINGS_HEADING)}
    row = rows["FID: better@2 < worse@2"]
    # Better on every seed by 2, 2.5 and 1: the paired test holds, where the seeds' spread would leave an unpaired
    # (Welch) test undecided.
    differences = np.array(MEASURED["worse@2"]) - np.array(MEASURED["better@2"])
    expected = stats.ttest_1samp(differences, 0.0, alternative="greater")
    assert row["verdict"] == "holds" and row["p, one-sided"] == f"{expected.pvalue:.3f}"
    assert row["t (df)"] == f"{expected.statistic:.2f} (2, paired)"
    unpaired = stats.ttest_ind(MEASURED["better@2"], MEASURED["worse@2"], equal_var=False, alternative="less")
    assert unpaired.pvalue > 0.05
    assert rows["FID: level@2 < better@2"]["verdict"] == "undecided"
    assert "Measurement `decision` (seeds 0, 1, 2): A decision. Made by `python decide.py`." in text
    assert "- FID: better@2 < missing@2 (measurement decision)" in text  # a sample it lacks: untested


@pytest.mark.parametrize("change,message", [
    ({"seeds": []}, "'seeds' must be a non-empty list"),
    ({"samples": {"a@2": {"fid": [1.0, 2.0]}}}, "sample 'a@2', metric 'fid': one finite number per seed (3)"),
    ({"kind": "run"}, "not a measurement"),
])
def test_a_malformed_measurement_is_one_line_naming_its_file(results_dir, tmp_path, capsys, change, message):
    measurement_file(results_dir, change)
    code = main(["leaderboard", str(results_dir), "--out", str(tmp_path / "board"),
                 "--claims", str(claims_file(tmp_path, MEASURED_CLAIMS))])
    err = capsys.readouterr().err
    assert code == 2 and "decision.json" in err and message in err and err.count("\n") == 1, err
