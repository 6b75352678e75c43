"""`cldiff-bench sweep` on this machine: the local executor (cells as submitit local jobs, N at a time) and the
debug executor (in-process)."""
import json
import re

import pytest

pytest.importorskip("submitit")

from cldiff_bench.cli import main  # noqa: E402
from cldiff_bench.results import validate_result  # noqa: E402

GRID = ["--strategies", "naive,joint", "--streams", "digits-5", "--seeds", "0,1", "--profile", "tiny",
        "--iterations", "2", "--num-generated", "40", "--parallel", "2", "--no-progress"]
CELLS = [f"digits-5/tiny/{s}/seed{i}" for i in (0, 1) for s in ("naive", "joint")]


def attempts(log: str) -> int:
    return len(re.findall(r"^--- .* attempt \d+ ", log, flags=re.M))


@pytest.mark.slow
def test_a_local_grid_runs_end_to_end_and_running_it_again_runs_only_what_is_missing(tmp_path, tmp_path_factory,
                                                                                     monkeypatch, capsys):
    monkeypatch.setenv("CLDIFF_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "shared-cache"))
    out = tmp_path / "runs"
    sweep_dir = out / "sweeps" / "sweep"
    assert main(["sweep", *GRID, "--out", str(out)]) == 0
    for key in CELLS:
        result = validate_result(json.loads((out / key / "result.json").read_text()), key)
        assert len(result["metrics"]["fid"]) == 5 and all(isinstance(v, float) for v in result["metrics"]["fid"])
        log = (sweep_dir / "logs" / f"{key.replace('/', '__')}.log").read_text()
        assert attempts(log) == 1 and "result written to" in log and "--threads 1" in log
        assert not (out / key).with_name(f".seed{key[-1]}.claim").exists()  # claims are released
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    assert sorted(manifest["submissions"][0]["jobs"]) == sorted(CELLS)
    assert "4 cells: 4 done" in capsys.readouterr().err

    missing = "digits-5/tiny/naive/seed1"
    (out / missing / "result.json").unlink()
    board = tmp_path / "board"
    assert main(["sweep", *GRID, "--out", str(out), "--leaderboard", str(board)]) == 0
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    again = manifest["submissions"][1]
    assert again["cells"] == {key: "submitted" if key == missing else "skipped: done" for key in CELLS}
    assert list(again["jobs"]) == [missing]
    for key in CELLS:
        log = (sweep_dir / "logs" / f"{key.replace('/', '__')}.log").read_text()
        assert attempts(log) == (2 if key == missing else 1), key
    assert (out / missing / "result.json").is_file()
    page = (board / "README.md").read_text()
    assert "cldiff-bench sweep --strategies naive,joint" in page and "4 cells" in page
    capsys.readouterr()
    assert main(["sweep", "status", str(sweep_dir)]) == 0
    assert "4 cells: 4 done, 0 running, 0 failed, 0 pending" in capsys.readouterr().err


def test_the_debug_executor_runs_cells_in_process(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["sweep", "--strategies", "naive", "--streams", "digits-5", "--profile", "tiny", "--iterations", "1",
            "--no-eval", "--out", str(out), "--executor", "debug", "--no-progress"]
    assert main(args) == 0
    run_dir = out / "digits-5/tiny/naive/seed0"
    assert (run_dir / "result.json").is_file()
    state = json.loads((out / "sweeps/sweep/cells/digits-5__tiny__naive__seed0.json").read_text())
    assert state["state"] == "done" and state["job_id"].startswith("DEBUG_")
    import os
    assert state["pid"] == os.getpid()  # this process ran it
    captured = capsys.readouterr()
    assert "result written to" in captured.out  # in the console, and in the cell's log
    assert "result written to" in (out / "sweeps/sweep/logs/digits-5__tiny__naive__seed0.log").read_text()
