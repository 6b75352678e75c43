"""Bad inputs to `check` and `leaderboard` are one-line errors with exit 2 (a regression is exit 1), and write
nothing."""
import json

import pytest

from cldiff_bench.cli import main

from .test_leaderboard import make_result, write


def assert_input_error(capsys, argv, *expected):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("cldiff-bench: error: ")
    assert "Traceback" not in captured.err and not captured.out
    for text in expected:
        assert text in captured.err
    return captured.err


@pytest.fixture
def reference(tmp_path):
    return write(tmp_path / "ref", make_result("gd", 0, {"fid": 10.0}))


def bad_inputs(tmp_path):
    """name -> (path, what the message must say)"""
    (tmp_path / "folder").mkdir()
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "text.json").write_text("not json {")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "typo.json").write_text(json.dumps({**make_result("gd", 0, {"fid": 1.0}), "config": "gd"}))
    (tmp_path / "dangling.json").symlink_to(tmp_path / "gone.json")
    return {"missing": (tmp_path / "nope.json", "does not exist"),
            "folder": (tmp_path / "folder", "is a folder"),
            "not utf-8": (tmp_path / "binary.json", "not UTF-8"),
            "not json": (tmp_path / "text.json", "not valid JSON"),
            "not an object": (tmp_path / "list.json", "not a JSON object"),
            "wrong type": (tmp_path / "typo.json", "'config' must be an object"),
            "dangling link": (tmp_path / "dangling.json", "does not exist")}


@pytest.mark.parametrize("case", ["missing", "folder", "not utf-8", "not json", "not an object", "wrong type",
                                  "dangling link"])
def test_check_refuses_a_bad_result_or_reference_file(tmp_path, capsys, reference, case):
    path, message = bad_inputs(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    names_role = case in ("missing", "folder", "dangling link")  # which of the two files is meant
    err = assert_input_error(capsys, ["check", str(path), "--against", str(reference)], str(path), message)
    assert "result file" in err or not names_role
    err = assert_input_error(capsys, ["check", str(reference), "--against", str(path)], str(path), message)
    assert "reference file" in err or not names_role
    assert sorted(tmp_path.rglob("*")) == before


def test_check_refuses_results_it_cannot_compare(tmp_path, capsys, reference):
    short = make_result("gd", 0, {"fid": 10.0}, n_tasks=2)
    assert_input_error(capsys, ["check", str(write(tmp_path / "short", short)), "--against", str(reference)],
                       "for 2 tasks, the reference for 3")
    unmeasured = make_result("gd", 0, {"fid": 10.0})
    unmeasured["metrics"]["fid"][-1] = None
    assert_input_error(capsys, ["check", str(write(tmp_path / "none", unmeasured)), "--against", str(reference)],
                       "the result does not")
    empty = make_result("gd", 0, {})
    assert_input_error(capsys, ["check", str(reference), "--against", str(write(tmp_path / "empty", empty))],
                       "no metric values")


def test_a_regression_is_exit_1_not_2(tmp_path, reference):
    worse = write(tmp_path / "worse", make_result("gd", 0, {"fid": 20.0}))
    assert main(["check", str(worse), "--against", str(reference)]) == 1


def test_leaderboard_on_a_missing_path_writes_nothing(tmp_path, capsys, reference):
    out = tmp_path / "board"
    assert_input_error(capsys, ["leaderboard", str(reference.parent), str(tmp_path / "nope"), "--out", str(out)],
                       "nope does not exist")
    assert not out.exists()


def test_leaderboard_output_that_is_a_file_is_refused(tmp_path, capsys, reference):
    out = tmp_path / "board.md"
    out.write_text("mine")
    assert_input_error(capsys, ["leaderboard", str(reference.parent), "--out", str(out)], "is not a folder")
    assert out.read_text() == "mine"


def test_leaderboard_with_only_unreadable_results_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "results" / "x" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\xff\xfe")
    out = tmp_path / "board"
    assert main(["leaderboard", str(tmp_path / "results"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not UTF-8" in err  # the skipped file is named, then the error
    assert not out.exists()
