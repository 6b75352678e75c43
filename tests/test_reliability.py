"""Failure modes: divergence, refused checkpoints, corrupt files, mixed configurations, Ctrl-C."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

from cldiff_bench.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from cldiff_bench.cli import main
from cldiff_bench.errors import UserError
from cldiff_bench.io import atomic_write_json, load_tensors, read_json
from tests.helpers import wait_until_training

FAST = ["--stream", "digits-5", "--profile", "tiny", "--iterations", "3", "--no-eval", "--no-progress"]


@pytest.mark.parametrize("checkpoint_every, window, kept", [(1, (2, 3), 2), (0, (0, 3), 0)])
def test_nan_loss_stops_naming_task_and_iteration_and_keeps_the_checkpoint(tmp_path, capsys, checkpoint_every,
                                                                           window, kept):
    """Losses are read from the device a window of iterations at a time (at every checkpoint, at the latest every
    READ_EVERY iterations and at the task's end): the error names the window and the iteration, and the checkpoint
    kept is the last one before the window, never one written after the loss diverged."""
    code = main(["--plugin", "tests.plugins.diverging_plugin", "run", "--strategy", "diverging", *FAST,
                 "--checkpoint-every", str(checkpoint_every), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"task 1 between iterations {window[0]} and {window[1]} (first at iteration 2" in err, err
    assert "nan" in err.lower()
    run_dir = tmp_path / "digits-5/tiny/diverging/seed0"
    state = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    assert state["position"] == {**state["position"], "task": 1, "iteration": kept}
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (run_dir / "result.json").exists()
    rows = (run_dir / "losses.csv").read_text().splitlines()
    assert rows[-1].startswith("1,2,nan")  # the diverged iteration is logged, the run stops there


def test_checkpoint_of_another_strategy_or_version_is_refused(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"suite_version": "0.0.1", "strategy": "gr", "model_preset": "tiny", "config_hash": "x"})
    with pytest.raises(UserError, match="suite_version"):
        load_checkpoint(path, {"suite_version": "0.1.0"})
    with pytest.raises(UserError, match="strategy 'gr'"):
        load_checkpoint(path, {"strategy": "gd"})
    with pytest.raises(UserError, match="model_preset"):
        load_checkpoint(path, {"model_preset": "small"})


def test_resume_refuses_a_run_directory_of_another_configuration(tmp_path, capsys):
    assert main(["run", "--strategy", "naive", *FAST, "--out", str(tmp_path)]) == 0
    longer = ["run", "--strategy", "naive", *FAST, "--iterations", "4", "--out", str(tmp_path)]  # last one wins
    assert main([*longer, "--resume"]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert main([*longer, "--force"]) == 0
    run_dir = tmp_path / "digits-5/tiny/naive/seed0"
    written = (run_dir / "result.json").stat().st_mtime_ns
    assert main(longer) == 0  # the same configuration again: skipped, the result is kept
    assert (run_dir / "result.json").stat().st_mtime_ns == written
    assert "skipped" in capsys.readouterr().err


def test_corrupt_files_are_named(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=str(bad)):
        load_tensors(bad)
    broken = tmp_path / "result.json"
    broken.write_text('{"schema_version": 1, "tasks": [')
    with pytest.raises(UserError, match="result.json is corrupt"):
        read_json(broken)


def test_checkpoints_never_unpickle_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(UserError):
        load_tensors(path)


def test_atomic_write_leaves_old_file_when_interrupted(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_json(path, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": Boom()})  # fails while serialising
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary file left behind


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_writes_a_checkpoint_and_resume_finishes(tmp_path, sig):
    """Ctrl-C, or the SIGTERM a scheduler sends before preempting a job: checkpoint, one line, exit 130."""
    out = tmp_path / "runs"
    run_dir = out / "digits-5/tiny/naive/seed0"
    args = ["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--iterations", "40",
            "--checkpoint-every", "2", "--no-eval", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cldiff_bench.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_training(run_dir)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("cldiff-bench: interrupted: ") and "Traceback" not in err
    assert f"{sig.name} at task 0" in last and "--resume" in last
    state = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    stopped_at = int(re.search(r"iteration (\d+)", last).group(1))
    assert state["position"] == {**state["position"], "task": 0, "iteration": stopped_at} and 0 < stopped_at < 40
    assert main([*args, "--resume"]) == 0
    result = json.loads((run_dir / "result.json").read_text())
    assert [t["train"]["iterations"] for t in result["tasks"]] == [40] * 5
    # the result's wall time is the whole run's: the stopped process's time counts, not only the resumed one's
    assert result["wall_seconds"] >= state["position"]["wall_seconds"] > 0
    assert result["wall_seconds"] >= sum(result["cost"]["seconds"].values())

