"""`cldiff-bench sweep` on this machine: the local executor (cells as submitit local jobs, N at a time) and the
debug executor (in-process)."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("submitit")

from cldiff_bench.cli import main  # noqa: E402
from cldiff_bench.results import validate_result  # noqa: E402
from cldiff_bench.checkpoint import CHECKPOINT_NAME  # noqa: E402
from cldiff_bench.runlock import lock_path, is_locked  # noqa: E402
from tests.helpers import wait_until_training  # noqa: E402

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
        assert not (out / key).with_name(f".seed{key[-1]}.lock").exists()  # locks are released
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    # Beside the cells, a job that trains the evaluation classifier first where the cache lacks it (as here, unless
    # this process trained it for an earlier test).
    assert sorted(set(manifest["submissions"][0]["jobs"]) - {"_evaluators"}) == sorted(CELLS)
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


def _pids_running(command_part: str) -> list[int]:
    """Processes whose command line contains `command_part` (the runs a sweep started)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if command_part in cmdline:
            pids.append(int(entry))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_background_sweep_stopped_with_sigterm_stops_its_runs_at_a_checkpoint(tmp_path, tmp_path_factory):
    """A sweep started in the background (SIGINT ignored, as `cmd &` leaves it) and stopped with SIGTERM, as a
    scheduler or `kill` stops it: its runs write a checkpoint and exit, the locks are let go, and the same command
    finishes the cells from there."""
    out = tmp_path / "runs"
    run_dir = out / "digits-5/tiny/naive/seed0"
    args = ["sweep", "--strategies", "naive", "--streams", "digits-5", "--profile", "tiny", "--iterations", "40",
            "--checkpoint-every", "2", "--no-eval", "--parallel", "1", "--threads", "1", "--poll", "0.2",
            "--no-progress", "--out", str(out)]
    env = {**os.environ, "CLDIFF_BENCH_CACHE": str(tmp_path_factory.getbasetemp() / "shared-cache")}
    sweep = subprocess.Popen([sys.executable, "-m", "cldiff_bench.cli", *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_until_training(run_dir)
        sweep.send_signal(signal.SIGTERM)
        _, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 130, err
    assert not is_locked(lock_path(run_dir))
    assert _pids_running(str(out)) == []  # no run of the sweep goes on without it
    state = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    assert state["position"]["task"] == 0 and 0 < state["position"]["iteration"] < 40
    log = (out / "sweeps/sweep/logs/digits-5__tiny__naive__seed0.log").read_text()
    assert f"interrupted: SIGTERM at task 0, iteration {state['position']['iteration']};" in log, log
    finished = subprocess.run([sys.executable, "-m", "cldiff_bench.cli", *args], env=env, capture_output=True,
                              text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    result = json.loads((run_dir / "result.json").read_text())
    assert [t["train"]["iterations"] for t in result["tasks"]] == [40] * 5


JOB = """
import sys
from cldiff_bench.sweep.cell import Cell
out, sweep_dir = sys.argv[1], sys.argv[2]
Cell("digits-5/tiny/naive/seed0", ["--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--seed", "0",
     "--iterations", "100000", "--checkpoint-every", "2", "--no-eval", "--out", out, "--resume", "--no-progress"],
     out + "/digits-5/tiny/naive/seed0", sweep_dir, threads=1)()
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals and /proc are Linux's")
def test_a_run_whose_job_is_killed_outright_stops_at_a_checkpoint_instead_of_going_on_alone(tmp_path):
    """A job SIGKILLed (an OOM killer, or submitit's local controller a second after its SIGINT) cannot stop its
    run: the run learns of it from the kernel, writes a checkpoint and exits, and lets go of the cell."""
    out = tmp_path / "runs"
    run_dir = out / "digits-5/tiny/naive/seed0"
    job = subprocess.Popen([sys.executable, "-c", JOB, str(out), str(tmp_path / "sweep")])
    try:
        wait_until_training(run_dir)
        assert _pids_running(str(out)), "the run did not start"
        job.kill()
        job.wait()
        deadline = time.time() + 60
        while _pids_running(str(out)) and time.time() < deadline:
            time.sleep(0.2)
        assert _pids_running(str(out)) == []
    finally:
        if job.poll() is None:
            job.kill()
        for pid in _pids_running(str(out)):
            os.kill(pid, signal.SIGKILL)
    state = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    assert state["position"]["task"] == 0 and 0 < state["position"]["iteration"] < 100000
    log = (tmp_path / "sweep/logs/digits-5__tiny__naive__seed0.log").read_text()
    assert f"interrupted: SIGTERM at task 0, iteration {state['position']['iteration']};" in log, log
    assert not is_locked(lock_path(run_dir))
