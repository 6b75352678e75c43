"""The `real data` row: an oracle result (real held-out images scored as if generated) as the floor of a table."""
import csv
import json

import pytest

from cldiff_bench.cli import main
from cldiff_bench.errors import UserError
from cldiff_bench.leaderboard import (build_tables, check_claims, load_claims, load_results, parse_cell,
                                      parse_markdown_table, parse_tex_tabulars)
from cldiff_bench.results import validate_result

from .test_leaderboard import make_result, write


def make_oracle(final, stream="digits-5", profile="tiny", extractor="classifier", num_generated=200,
                version="0.1.0", n_tasks=3):
    """What `cldiff-bench oracle` writes: a schema-v1 result of kind "oracle", with no training budget."""
    doc = make_result("real-data", 0, final, extractor=extractor, version=version, n_tasks=n_tasks, stream=stream,
                      wall=5.0)
    doc["kind"] = "oracle"
    doc["config"] = {"strategy": "real-data", "kind": "oracle", "stream": stream, "seed": 0,
                     "budget": {"profile": profile}, "model": None, "precision": None,
                     "evaluation": {"num_generated": num_generated, "fid_steps": 4}, "class_order": [0, 1]}
    doc["cost"] = {"counts": {"student_forward": 0, "student_backward": 0, "teacher_forward": 0}}
    return validate_result(doc)


def write_oracle(root, doc):
    cfg = doc["config"]
    path = root / cfg["stream"] / cfg["budget"]["profile"] / "real-data" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def results_dir(tmp_path):
    root = tmp_path / "results"
    for seed, fid in enumerate([10.0, 12.0, 14.0]):
        write(root, make_result("gd", seed, {"fid": fid, "kld": 1.0, "accuracy": 0.8}, wall=90.0))
        write(root, make_result("naive", seed, {"fid": 30.0 + seed, "kld": 2.0, "accuracy": 0.4}))
    # better than every run on FID, as real images should be; no accuracy (nothing is trained)
    write_oracle(root, make_oracle({"fid": 2.0, "kld": 0.05, "ard": 0.01}))
    return root


def test_real_data_is_the_last_row_unranked(results_dir, tmp_path):
    out = tmp_path / "board"
    assert main(["leaderboard", str(results_dir), "--out", str(out), "--no-claims"]) == 0
    rows = parse_markdown_table((out / "README.md").read_text())
    assert [r["strategy"] for r in rows] == ["gd", "naive", "real data"]
    real, gd = rows[-1], rows[0]
    assert real["seeds"] == "1"
    assert real["FID ↓"] == "2 ± –" and parse_cell(real["FID ↓"]) == (2.0, None)  # never bold, no s.e.
    assert gd["FID ↓"].startswith("**")  # the best run is still marked best
    assert real["Accuracy ↑"] == "-"
    assert real["time × naive"] == real["training NFEs (M)"] == real["wall time (min)"] == "–"


def test_real_data_shares_the_table_despite_budget_model_and_precision(results_dir):
    (table,) = build_tables(load_results([results_dir])[0])
    real = table.rows[-1]
    assert real.oracle and real.name == "real data" and not real.flags
    assert table.settings["model"] == {"preset": "tiny"}  # the table states the runs' settings, not the oracle's


@pytest.mark.parametrize("change, what", [(dict(extractor="inception"), "extractor"),
                                          (dict(num_generated=1000), "generated samples"),
                                          (dict(version="0.2.0"), "suite version")])
def test_real_data_scored_differently_is_refused_or_flagged(tmp_path, change, what):
    root = tmp_path / "results"
    for seed in (0, 1):
        write(root, make_result("gd", seed, {"fid": 10.0 + seed}))
    write_oracle(root, make_oracle({"fid": 2.0}, **change))
    results, _ = load_results([root])
    with pytest.raises(UserError, match=what):
        build_tables(results)
    (table,) = build_tables(results, allow_mixed=True)
    assert table.rows[-1].flags == ["(!)"] and not table.rows[0].flags


def test_real_data_classifier_version_must_match(tmp_path):
    root = tmp_path / "results"
    write(root, make_result("gd", 0, {"fid": 10.0}))
    doc = make_oracle({"fid": 2.0})
    doc["evaluation"]["evaluation_classifier"]["version"] = "cnn-e3"
    write_oracle(root, doc)
    with pytest.raises(UserError, match="evaluation classifier"):
        build_tables(load_results([root])[0])


def test_real_data_takes_part_only_in_claims_that_name_it(results_dir, tmp_path):
    tables = build_tables(load_results([results_dir])[0])
    path = tmp_path / "claims.toml"
    path.write_text('[[claim]]\nmetric = "fid"\norder = ["real-data", "gd"]\n'
                    '[[claim]]\nmetric = "fid"\norder = ["gd", "naive"]\n'
                    '[[claim]]\nmetric = "accuracy"\norder = ["real-data", "gd"]\n')
    findings = check_claims(tables, load_claims(path), "test")
    got = {(c.better, c.worse): c for c in findings.comparisons}
    assert set(got) == {("real-data", "gd"), ("gd", "naive")}  # the oracle has no accuracy: not judged
    floor = got[("real-data", "gd")]
    # its s.e. counts as 0: the comparison rests on gd's s.e. alone (1.155), and 10 > 1.155
    assert floor.verdict == "holds" and floor.combined_se == pytest.approx(table_se(tables, "gd"))
    assert findings.untested == ["Accuracy: real-data > gd"]


def table_se(tables, strategy):
    return next(r for r in tables[0].rows if r.strategy == strategy).final["fid"][1]


def test_real_data_in_csv_and_latex(results_dir, tmp_path):
    out = tmp_path / "board"
    assert main(["leaderboard", str(results_dir), "--out", str(out), "--format", "csv"]) == 0
    real = list(csv.DictReader((out / "leaderboard.csv").open()))[-1]
    assert (real["strategy"], real["kind"], real["seeds"]) == ("real-data", "oracle", "1")
    assert float(real["fid_mean"]) == 2.0 and real["fid_se"] == "" and real["accuracy_mean"] == ""
    assert real["time_vs_naive"] == real["wall_seconds"] == ""
    assert main(["leaderboard", str(results_dir), "--out", str(out), "--format", "latex"]) == 0
    text = (out / "leaderboard.tex").read_text()
    (_, body), *_ = parse_tex_tabulars(text)
    assert body[-1][:3] == ["real data", "1", r"$2$ $\pm$ --"]
    assert r"\mathbf{2" not in text
