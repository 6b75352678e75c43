"""Two sweeps over one output folder never run a cell twice: each cell is locked (an flock beside its run
directory) by the process that runs it, and a dead process's lock never blocks."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("submitit")

from cldiff_bench.cli import main  # noqa: E402
from cldiff_bench.runlock import RunLock, lock_path, is_locked  # noqa: E402

HOLD = textwrap.dedent("""
    import sys, time
    from cldiff_bench.runlock import RunLock
    lock = RunLock(sys.argv[1])
    assert lock.acquire({"sweep_dir": sys.argv[2], "host": "elsewhere", "job_id": "77", "pid": 0})
    print("held", flush=True)
    time.sleep(600)
""")


def hold(path, sweep_dir="/other/sweep") -> subprocess.Popen:
    """Another process holding the lock (as another sweep's running cell does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(sweep_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_is_exclusive_and_a_dead_holder_does_not_block(tmp_path):
    path = lock_path(tmp_path / "runs/digits-5/tiny/gd/seed0")
    holder = hold(path)
    try:
        assert is_locked(path)
        assert not RunLock(path).acquire({"pid": os.getpid()}, tries=3, delay_s=0.05)
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without releasing anything: its lock file stays behind
        holder.wait()
    assert path.exists() and not is_locked(path)
    lock = RunLock(path)
    assert lock.acquire({"pid": os.getpid()}, tries=1)
    assert json.loads(path.read_text()) == {"pid": os.getpid()}
    assert is_locked(path)  # an flock is per open file: our own lock is seen as held too
    lock.release()
    assert not path.exists()


def test_a_cell_locked_by_another_sweep_is_left_to_it(tmp_path, capsys):
    from cldiff_bench.sweep.cell import Cell
    out = tmp_path / "runs"
    run_dir = out / "digits-5/tiny/naive/seed0"
    holder = hold(lock_path(run_dir), "/other/sweep")
    try:
        # A sweep planned while the other runs the cell leaves it alone...
        args = ["sweep", "--strategies", "naive", "--streams", "digits-5", "--profile", "tiny", "--iterations", "1",
                "--no-eval", "--out", str(out), "--executor", "debug", "--no-progress"]
        assert main(args) == 0
        captured = capsys.readouterr()
        row = [line for line in captured.out.splitlines() if line.startswith("digits-5/tiny/naive/seed0")][0]
        assert " running " in row and "in another sweep (/other/sweep, job 77 on elsewhere)" in row
        assert not run_dir.exists()
        # ...and a cell that starts while the other holds it does not run it either.
        cell = Cell("digits-5/tiny/naive/seed0", ["--strategy", "naive"], run_dir, tmp_path / "sweep")
        outcome = cell()
        assert outcome["state"] == "locked" and outcome["locked_by"]["sweep_dir"] == "/other/sweep"
        assert json.loads((tmp_path / "sweep/cells/digits-5__tiny__naive__seed0.json").read_text())[
            "state"] == "locked"
        assert not run_dir.exists() and not (tmp_path / "sweep/logs").exists()  # no run was started
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


@pytest.mark.slow
def test_two_sweeps_at_once_over_one_output_folder_write_each_cell_once(tmp_path):
    out = tmp_path / "runs"
    grid = ["--strategies", "naive", "--streams", "digits-5", "--seeds", "0,1", "--profile", "tiny", "--iterations",
            "2", "--no-eval", "--parallel", "2", "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweeps = [subprocess.Popen([sys.executable, "-m", "cldiff_bench.cli", "sweep", *grid, "--sweep-dir",
                                str(tmp_path / name)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for name in ("a", "b")]
    outputs = [p.communicate(timeout=900) for p in sweeps]
    for proc, (stdout, stderr) in zip(sweeps, outputs):
        assert proc.returncode == 0, stderr
    for seed in (0, 1):
        key = f"digits-5__tiny__naive__seed{seed}"
        logs = [tmp_path / name / "logs" / f"{key}.log" for name in ("a", "b")]
        text = "".join(p.read_text() for p in logs if p.exists())
        assert text.count("result written to") == 1, text  # trained and written by one of the two
        assert (out / f"digits-5/tiny/naive/seed{seed}/result.json").is_file()
        assert not lock_path(out / f"digits-5/tiny/naive/seed{seed}").exists()
    # Each sweep ran or left alone each cell: locked by the other, skipped as done, or found done by its run.
    for name in ("a", "b"):
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert len(manifest["cells"]) == 2
    # Afterwards, either sweep's status sees every cell done.
    status = subprocess.run([sys.executable, "-m", "cldiff_bench.cli", "sweep", "status", str(tmp_path / "a")],
                            capture_output=True, text=True, timeout=120)
    assert "2 cells: 2 done" in status.stderr, status.stderr
