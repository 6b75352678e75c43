"""Budgets: what a profile fixes, what the command line overrides, and that the optimizer uses it."""
import json
import math

import torch

from cldiff_bench.cli import main
from cldiff_bench.core import DiffusionCore
from cldiff_bench.diffusion.unet import MODEL_PRESETS, model_config
from cldiff_bench.profiles import STUDY_LEARNING_RATE, get_profile, resolve_budget
from cldiff_bench.registry import load_registry


def test_small_profile_fixes_iterations_and_learning_rate_tiny_keeps_the_study_rate():
    spec = load_registry().stream("fmnist-5")
    small = resolve_budget(get_profile("small"), spec)
    assert small["iterations"] == 100 and small["epochs"] is None and small["learning_rate"] == 1e-3
    tiny = resolve_budget(get_profile("tiny"), spec)
    assert tiny["iterations"] is None and tiny["epochs"] == 2 and tiny["learning_rate"] == STUDY_LEARNING_RATE
    paper = resolve_budget(get_profile("paper"), spec)
    assert paper["epochs"] == spec.paper_epochs and paper["learning_rate"] == STUDY_LEARNING_RATE


def _run(tmp_path, profile, *extra):
    code = main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", profile, "--model", "tiny",
                 "--no-eval", "--no-progress", "--out", str(tmp_path), *extra])
    assert code == 0
    run_dir = tmp_path / f"digits-5/{profile}/naive/seed0"
    return run_dir, json.loads((run_dir / "result.json").read_text())


def test_learning_rate_override_is_recorded_and_is_the_size_of_adams_first_step(tmp_path):
    lr = 0.01
    run_dir, result = _run(tmp_path, "tiny", "--iterations", "1", "--learning-rate", str(lr))
    assert result["config"]["optimizer"]["lr"] == lr
    assert [t["train"]["iterations"] for t in result["tasks"]] == [1] * 5
    # Adam's first update moves every parameter with a gradient by exactly lr (m / sqrt(v) = +-1), so the
    # largest change after one iteration is the learning rate the optimizer was given.
    cfg = model_config("tiny", MODEL_PRESETS["tiny"], 1)
    shape = tuple(result["stream"]["image_shape"])
    initial = DiffusionCore(cfg, shape, torch.device("cpu"), init_seed=0).model.state_dict()
    after = torch.load(run_dir / "models/task0.pt", weights_only=True)
    after = after.get("model", after)
    largest = max(float((after[name] - initial[name]).abs().max()) for name in initial)
    assert abs(largest - lr) < 1e-3 * lr


def test_epochs_on_the_command_line_replace_the_profiles_fixed_iteration_count(tmp_path):
    _, result = _run(tmp_path, "small", "--epochs", "0.5")
    budget = result["config"]["budget"]
    assert budget["iterations"] is None and budget["epochs"] == 0.5 and budget["learning_rate"] == 1e-3
    for task in result["tasks"]:
        per_epoch = math.ceil(task["train"]["images"] / 64)
        assert task["train"]["iterations"] == math.ceil(0.5 * per_epoch) < 100
