import json
import math
from pathlib import Path

import pytest

from cldiff_bench.cli import main
from cldiff_bench.errors import UserError
from cldiff_bench.leaderboard import (build_tables, load_results, mean_and_standard_error, parse_cell,
                                      parse_markdown_table)


def make_result(strategy, seed, final, extractor="classifier", version="0.1.0", n_tasks=3, wall=60.0,
                stream="digits-5"):
    """A minimal result document: metrics rise linearly to `final` values over the tasks."""
    metrics = {m: [v * (k + 1) / n_tasks for k in range(n_tasks)] for m, v in final.items()}
    return {
        "schema_version": 1, "suite": {"name": "cldiff-bench", "version": version, "git": None},
        "config": {"strategy": strategy, "seed": seed, "stream": stream, "strategy_options": {},
                   "budget": {"profile": "tiny", "model": "tiny", "epochs": 2, "batch_size": 32, "iterations": None,
                              "grid_samples": 16},
                   "model": {"preset": "tiny"}, "precision": "fp32",
                   "evaluation": {"num_generated": 200, "fid_steps": 4}, "class_order": [seed]},
        "evaluation": {"extractor": extractor, "evaluation_classifier": {"version": "cnn-e20"}},
        "stream": {"name": stream}, "tasks": [{"task": k, "metrics": {}} for k in range(n_tasks)],
        "metrics": metrics, "cost": {"counts": {"student_forward": 1000, "student_backward": 1000,
                                                "teacher_forward": 500 if strategy != "naive" else 0}},
        "wall_seconds": wall,
    }


def write(folder: Path, doc: dict) -> Path:
    path = folder / doc["config"]["strategy"] / f"seed{doc['config']['seed']}" / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


FIDS = {"naive": [30.0, 34.0, 32.0], "gd": [10.0, 12.0, 14.0]}


@pytest.fixture
def results_dir(tmp_path):
    for strategy, fids in FIDS.items():
        for seed, fid in enumerate(fids):
            write(tmp_path, make_result(strategy, seed, {"fid": fid, "accuracy": 0.5 + 0.1 * seed},
                                        wall=60.0 if strategy == "naive" else 90.0))
    return tmp_path


def test_mean_and_standard_error_use_ddof_1():
    mean, se = mean_and_standard_error([1.0, 2.0, 6.0])
    assert mean == pytest.approx(3.0)
    assert se == pytest.approx(math.sqrt(((4 + 1 + 9) / 2) / 3))
    assert mean_and_standard_error([5.0]) == (5.0, None)


def test_rows_aggregate_over_seeds(results_dir):
    results, skipped = load_results([results_dir])
    (table,) = build_tables(results)
    rows = {r.strategy: r for r in table.rows}
    assert rows["gd"].seeds == [0, 1, 2]
    assert rows["gd"].final["fid"][0] == pytest.approx(12.0)
    assert rows["gd"].final["fid"][1] == pytest.approx(mean_and_standard_error([10.0, 12.0, 14.0])[1])
    assert rows["naive"].per_task["fid"][0][0] == pytest.approx(32.0 / 3)
    assert rows["gd"].training_nfe == 2500 and not skipped


def test_markdown_parses_back_to_the_numbers(results_dir, tmp_path):
    out = tmp_path / "board"
    assert main(["leaderboard", str(results_dir), "--out", str(out)]) == 0
    text = (out / "README.md").read_text()
    rows = {r["strategy"]: r for r in parse_markdown_table(text)}
    mean, se = parse_cell(rows["gd"]["FID ↓"])
    assert mean == pytest.approx(12.0) and se == pytest.approx(1.2, abs=0.01)
    assert rows["gd"]["FID ↓"].startswith("**")  # best (lowest) FID in bold
    assert parse_cell(rows["naive"]["Accuracy ↑"])[0] == pytest.approx(0.6)
    assert rows["gd"]["seeds"] == "3" and rows["gd"]["time × naive"] == "1.50"
    assert (out / "plots" / "digits-5-tiny-metrics.png").stat().st_size > 1000
    assert "not the study's budget" in text


def test_mixing_extractors_or_versions_is_refused_unless_allowed(results_dir, tmp_path):
    write(results_dir, make_result("lwf", 0, {"fid": 5.0}, extractor="inception"))
    results, _ = load_results([results_dir])
    with pytest.raises(UserError, match="extractor"):
        build_tables(results)
    (table,) = build_tables(results, allow_mixed=True)
    assert any("(!)" in r.flags for r in table.rows) and table.notes


def test_results_scored_by_two_trainings_of_one_classifier_recipe_are_refused():
    """The same recipe trained on two processors is two networks: FIDs in their features do not compare."""
    from cldiff_bench.leaderboard.aggregate import LoadedResult
    docs = [make_result("naive", s, {"fid": 5.0}) for s in (0, 1)]
    for doc, digest in zip(docs, ("aaaa", "bbbb")):
        doc["evaluation"]["evaluation_classifier"]["weights_sha256"] = digest
    with pytest.raises(UserError, match=r"evaluation classifier: .*weights aaaa.*weights bbbb"):
        build_tables([LoadedResult(f"{i}.json", d) for i, d in enumerate(docs)])
    docs[1]["evaluation"]["evaluation_classifier"]["weights_sha256"] = "aaaa"
    (table,) = build_tables([LoadedResult(f"{i}.json", d) for i, d in enumerate(docs)])
    assert table.rows[0].seeds == [0, 1]


def test_results_drawn_with_another_sampler_are_refused_and_ddim_is_the_unnamed_one():
    from cldiff_bench.leaderboard.aggregate import LoadedResult
    plain, named, other = (make_result(s, 0, {"fid": 5.0}) for s in ("naive", "gd", "lwf"))
    named["config"]["evaluation"]["sampler"] = "ddim"
    other["config"]["evaluation"]["sampler"] = "dpmpp-2m"
    (table,) = build_tables([LoadedResult("a.json", plain), LoadedResult("b.json", named)])
    assert len(table.rows) == 2
    with pytest.raises(UserError, match=r"metric sampler: .*ddim.*dpmpp-2m"):
        build_tables([LoadedResult("a.json", plain), LoadedResult("c.json", other)])


def test_duplicate_seed_is_refused(results_dir, tmp_path):
    other = tmp_path / "copy"
    write(other, make_result("gd", 1, {"fid": 99.0}))
    results, _ = load_results([results_dir, other])
    with pytest.raises(UserError, match=r"seed\(s\) \[1\]"):
        build_tables(results)


def test_malformed_result_is_named_and_skipped_or_refused(results_dir, tmp_path, capsys):
    bad = results_dir / "broken" / "result.json"
    bad.parent.mkdir()
    bad.write_text('{"schema_version": 1}')
    assert main(["leaderboard", str(results_dir), "--out", str(tmp_path / "board")]) == 0
    assert str(bad) in capsys.readouterr().err
    assert main(["leaderboard", str(results_dir), "--out", str(tmp_path / "board"), "--strict"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_check_passes_within_tolerance_and_fails_beyond(tmp_path, capsys):
    ref = write(tmp_path / "ref", make_result("gd", 0, {"fid": 10.0, "accuracy": 0.8}))
    same = write(tmp_path / "same", make_result("gd", 0, {"fid": 11.0, "accuracy": 0.75}))
    better = write(tmp_path / "better", make_result("gd", 0, {"fid": 2.0, "accuracy": 0.99}))
    worse = write(tmp_path / "worse", make_result("gd", 0, {"fid": 14.0, "accuracy": 0.8}))
    assert main(["check", str(same), "--against", str(ref)]) == 0
    assert main(["check", str(better), "--against", str(ref)]) == 0
    assert main(["check", str(worse), "--against", str(ref)]) == 1
    out = capsys.readouterr().out
    assert "WORSE" in out and "FAIL" in out
    assert main(["check", str(worse), "--against", str(ref), "--tolerance", "fid=0+50%"]) == 0
    other = write(tmp_path / "other", make_result("gr", 0, {"fid": 10.0}))
    assert main(["check", str(other), "--against", str(ref)]) == 2


def test_page_states_the_budget_model_size_and_the_producing_command(tmp_path):
    from cldiff_bench.diffusion.unet import MODEL_PRESETS, UNet, count_parameters, model_config
    cfg = model_config("tiny", MODEL_PRESETS["tiny"], 1)
    for seed in (0, 1):
        doc = make_result("gd", seed, {"fid": 10.0 + seed})
        doc["config"]["model"] = {"preset": "tiny", **cfg.to_dict()}
        doc["config"]["budget"].update(iterations=100, epochs=None, learning_rate=1e-3)
        write(tmp_path / "results", doc)
    out = tmp_path / "board"
    assert main(["leaderboard", str(tmp_path / "results"), "--out", str(out), "--produced-by", "bash sweep.sh"]) == 0
    text = (out / "README.md").read_text()
    size = count_parameters(UNet(cfg)) / 1e6
    assert f"Model `tiny` ({size:.2f}M parameters), 100 iterations per task at batch 32, learning rate 0.001" in text
    assert "Results produced by: `bash sweep.sh`" in text
    assert main(["leaderboard", str(tmp_path / "results"), "--out", str(out), "--produced-by", "bash sweep.sh",
                 "--produced-by", "bash more.sh"]) == 0
    assert "Results produced by:\n\n- `bash sweep.sh`\n- `bash more.sh`\n" in (out / "README.md").read_text()


def test_a_page_is_a_function_of_its_results_folder_wherever_it_is_built(tmp_path):
    from cldiff_bench.leaderboard.provenance import PRODUCED_BY_NAME, record_produced_by
    results = tmp_path / "results"
    for seed in (0, 1):
        write(results, make_result("gd", seed, {"fid": 10.0 + seed}))
    record_produced_by(results, "cldiff-bench sweep --seeds 0 (1 cell; 3 min wall)")
    record_produced_by(results, "bash more.sh")
    # a sweep continued replaces its own line with its new total; another command's line stays
    record_produced_by(results, "cldiff-bench sweep --seeds 0 (2 cells; 2 invocations, 7 min wall together)")
    assert (results / PRODUCED_BY_NAME).read_text().splitlines() == [
        "cldiff-bench sweep --seeds 0 (2 cells; 2 invocations, 7 min wall together)", "bash more.sh"]
    pages = []
    for where in ("a", "b/c"):
        assert main(["leaderboard", str(results), "--out", str(tmp_path / where)]) == 0
        pages.append((tmp_path / where / "README.md").read_text())
    assert pages[0] == pages[1]
    assert "- `cldiff-bench sweep --seeds 0 (2 cells; 2 invocations, 7 min wall together)`\n- `bash more.sh`" in pages[0]
    assert f"Page built by: `cldiff-bench leaderboard {results}`" in pages[0]
