"""End-to-end runs on the offline digits stream, through the command line."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cldiff_bench.checkpoint import CHECKPOINT_NAME
from cldiff_bench.cli import main
from cldiff_bench.results import validate_result

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def shared_evaluator_cache(tmp_path_factory, monkeypatch):
    """The evaluation classifier is meant to be shared between runs: train it once for these tests."""
    monkeypatch.setenv("CLDIFF_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "shared-cache"))


def load(path: Path) -> dict:
    return validate_result(json.loads(path.read_text()), str(path))


def test_tiny_naive_run_writes_result_and_grids(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--out", str(out),
                 "--no-progress"]) == 0
    run_dir = out / "digits-5/tiny/naive/seed0"
    result = load(run_dir / "result.json")
    assert len(result["tasks"]) == 5
    for name in ("fid", "kld", "ard", "accuracy"):
        values = result["metrics"][name]
        assert len(values) == 5 and all(isinstance(v, float) for v in values), name
    assert all(0 <= a <= 1 for a in result["metrics"]["accuracy"])
    assert result["evaluation"]["extractor"] == "classifier"
    assert result["stream"]["class_order"] == result["config"]["class_order"]
    for task in result["tasks"]:
        grid = run_dir / task["sample_grid"]
        assert grid.is_file() and grid.stat().st_size > 100
        from PIL import Image
        with Image.open(grid) as image:  # 16 tiles of 3 x 32 px in a 4 x 4 grid, each with a caption strip
            assert image.width >= 4 * 96 and image.height >= 4 * (96 + 12)
        counts = task["cost"]["counts"]
        # naive: one student forward and backward per real image, nothing else during training
        images = task["train"]["images"]
        assert counts["student_forward"] == counts["student_backward"] == images * 2  # 2 epochs
        assert counts["teacher_forward"] == 0 and counts["images_generated"] == 0
        # Each evaluation image once: the metric samples, the solver's replay, the grid.
        metrics = task["metrics"]
        assert counts["evaluation_images_generated"] == (metrics["num_generated"] + 16
                                                         + metrics.get("solver_replay_images", 0))
        assert task["cost"]["seconds"]["train"] > 0 and task["cost"]["seconds"]["evaluation"] > 0
    assert result["cost"]["counts"]["student_forward"] == sum(t["cost"]["counts"]["student_forward"]
                                                              for t in result["tasks"])

    # Scoring the saved per-task models again with the same settings reproduces the metrics exactly.
    again = tmp_path / "again.json"
    assert main(["evaluate", str(run_dir), "--out", str(again), "--no-progress"]) == 0
    rescored = load(again)
    assert rescored["metrics"] == result["metrics"]
    assert [t["train"] for t in rescored["tasks"]] == [t["train"] for t in result["tasks"]]


def strip_timing(result: dict) -> dict:
    """A result without what legitimately differs between two identical runs (time, memory, creation date)."""
    result = json.loads(json.dumps(result))
    for key in ("created", "wall_seconds"):
        result.pop(key)
    result["cost"].pop("seconds")
    for task in result["tasks"]:
        task["cost"] = task["cost"]["counts"]
    return result


GD_ARGS = ["run", "--strategy", "gd", "--stream", "digits-5", "--profile", "tiny", "--iterations", "4",
           "--num-generated", "40", "--no-progress", "--checkpoint-every", "1"]


def test_same_seed_twice_gives_identical_results(tmp_path):
    for name in ("a", "b"):
        assert main([*GD_ARGS, "--out", str(tmp_path / name)]) == 0
    a = load(tmp_path / "a/digits-5/tiny/gd/seed0/result.json")
    b = load(tmp_path / "b/digits-5/tiny/gd/seed0/result.json")
    assert strip_timing(a) == strip_timing(b)
    # the analytic cost of gd with 2 teacher steps: per replay image 2 sampling forwards + 1 target forward
    for task in a["tasks"][1:]:
        counts = task["cost"]["counts"]
        assert counts["teacher_forward"] == 3 * counts["images_generated"] > 0
        assert counts["student_forward"] == counts["student_backward"] == 2 * counts["images_generated"]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    reference = tmp_path / "reference"
    assert main([*GD_ARGS, "--out", str(reference)]) == 0
    expected = strip_timing(load(reference / "digits-5/tiny/gd/seed0/result.json"))

    out = tmp_path / "killed"
    run_dir = out / "digits-5/tiny/gd/seed0"
    # same thread count as this process: float reductions, hence results, depend on it
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "cldiff_bench.cli", *GD_ARGS, "--out", str(out)]
    # Kill at three points: mid-task 1 (after its second iteration's checkpoint), during the evaluation after
    # task 2 (its model is saved just before the evaluation starts), then mid-task 3.
    for position in ({"task": 1, "iteration": 2}, {"evaluating": 2}, {"task": 3, "iteration": 1}):
        proc = subprocess.Popen(cmd + (["--resume"] if (run_dir / CHECKPOINT_NAME).exists() else []), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if "evaluating" in position:
                if (run_dir / f"models/task{position['evaluating']}.pt").exists():
                    time.sleep(0.5)
                    break
                time.sleep(0.05)
                continue
            ckpt = run_dir / CHECKPOINT_NAME
            if ckpt.exists():
                try:
                    state = torch.load(ckpt, weights_only=True)
                except Exception:
                    state = None  # being replaced right now
                if state and (state["position"]["task"], state["position"]["iteration"]) >= \
                        (position["task"], position["iteration"]):
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (run_dir / "result.json").exists()
    assert main([*GD_ARGS, "--out", str(out), "--resume"]) == 0
    assert strip_timing(load(run_dir / "result.json")) == expected
    # The loss log holds every iteration once, as the uninterrupted run's does: the killed runs' tails are dropped.
    reference_log = (reference / "digits-5/tiny/gd/seed0/losses.csv").read_text()
    assert (run_dir / "losses.csv").read_text() == reference_log
    rows = reference_log.splitlines()
    assert rows[0] == "task,iteration,loss,data_loss,replay_loss"
    assert len(rows) - 1 == sum(t["train"]["iterations"] for t in expected["tasks"])
