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


def _resolved(profile: str, stream: str = "cifar10-5", **overrides):
    """The configuration a run of `profile` records, without data: the settings resolve everything but the stream."""
    from cldiff_bench.settings import RunConfig, resolve_settings
    settings = resolve_settings(RunConfig(strategy="gd", stream=stream, profile=profile, device="cpu", **overrides),
                                load_registry())
    return settings, settings.recorded_evaluation()


def test_paper_profile_is_the_studys_evaluation_in_float32_with_its_seeds_and_cifar_flips():
    run, evaluation = _resolved("paper")
    assert run.precision == "fp32"
    assert run.hflip is True  # the study's CIFAR-10 transform flips at random
    assert get_profile("paper").study_seeds == (42, 69, 1714)
    assert evaluation["classifier_arch"] == "resnet18-imagenet" and evaluation["classifier_epochs"] == 100
    assert evaluation["solver_arch"] == "simple-cnn" and evaluation["solver_epochs"] == 20
    assert evaluation["solver_batch_size"] == 128 and evaluation["kd_direction"] == "original-reversed"
    assert evaluation["extractor"] == "inception" and evaluation["num_generated"] == 10000
    assert evaluation["fid_steps"] == 20 and evaluation["classifier_holdout"] == 0.1
    # as the official code: its solver learns from the flipped experience, its FID truncates samples to 8 bits
    assert evaluation["solver_flip"] is True and evaluation["generated_to_uint8"] == "truncate"
    fmnist, fmnist_eval = _resolved("paper", "fmnist-5")
    assert fmnist.hflip is False and fmnist_eval["fid_steps"] == 10  # the study flips CIFAR-10 only
    assert "solver_flip" not in fmnist_eval and fmnist_eval["generated_to_uint8"] == "truncate"
    _, cpu_eval = _resolved("cpu")
    assert "solver_flip" not in cpu_eval and "generated_to_uint8" not in cpu_eval  # CPU profiles stay as they are
    assert abs(fmnist_eval["classifier_holdout"] - 1 / 6) < 1e-12  # its 50,000 / 10,000 split


def test_precision_comes_from_the_profile_not_the_machine_and_bf16_is_an_opt_in():
    for name in ("paper", "small", "tiny"):
        assert _resolved(name)[0].precision == "fp32"
    assert _resolved("small", precision="bf16")[0].precision == "bf16"


def test_cifar_flips_reach_the_training_batches(tmp_path):
    """With the study's flips on, a batch is the un-flipped batch with a keyed subset of its images mirrored."""
    from dataclasses import replace

    from cldiff_bench.runner import Run
    from cldiff_bench.settings import RunConfig, resolve_settings
    registry = load_registry()
    first_batches = []
    for flip in (True, False):
        settings = resolve_settings(RunConfig(strategy="naive", stream="digits-5", profile="tiny", device="cpu",
                                              budget={"iterations": 1}, out=tmp_path / str(flip), evaluate=False,
                                              progress=False), registry)
        seen = []

        class Recording(settings.strategy_cls):
            def batch_loss(self, batch):
                seen.append(batch.x0.clone())
                return super().batch_loss(batch)

        Run(replace(settings, hflip=flip, strategy_cls=Recording), registry).execute()
        first_batches.append(seen[0])
    flipped, plain = first_batches
    mirrored = [torch.equal(f, p.flip(-1)) and not torch.equal(f, p) for f, p in zip(flipped, plain)]
    kept = [torch.equal(f, p) for f, p in zip(flipped, plain)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 0 < sum(mirrored) < len(mirrored)


def test_the_cpu_profile_is_calibrated_per_stream_and_says_so_only_where_it_differs():
    cifar, cifar_eval = _resolved("cpu")
    assert cifar.budget.model == "small-p2" and cifar.budget.image_size is None  # 32 x 32, the pinned ruler's size
    assert cifar.budget.to_dict()["calibrated_for"] == "cifar10-5"
    assert cifar_eval["solver_max_images"] == 1500 and cifar_eval["solver_replay_once"] is True
    fmnist, fmnist_eval = _resolved("cpu", "fmnist-5")
    assert fmnist.budget.model == "small" and fmnist.budget.image_size == 16
    # the board's configurations (and hashes) are those it was published with: no new key where nothing differs
    assert "calibrated_for" not in fmnist.budget.to_dict() and fmnist_eval["solver_max_images"] == 3000
    assert get_profile("cpu", "cifar10-5").per_stream == {} and get_profile("cpu").per_stream


def test_a_patch_unet_draws_every_pixel_at_the_cost_of_a_half_size_image():
    from cldiff_bench.diffusion.unet import UNet, count_parameters
    patched = UNet(model_config("small-p2", MODEL_PRESETS["small-p2"], 3))
    plain = UNet(model_config("small", MODEL_PRESETS["small"], 3))
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = patched(x, torch.tensor([10, 500]))
    assert out.shape == x.shape
    # each output pixel of a 2 x 2 patch has weights of its own: one pixel's output answers to the whole image,
    # and the four pixels of a patch are not copies of each other
    out[0, :, 5, 7].sum().backward()
    assert x.grad[0].abs().sum() > 0 and x.grad[1].abs().sum() == 0
    assert not torch.allclose(out[0, :, 4, 6], out[0, :, 5, 7])
    # only the first and last convolutions grow (12 channels in and out instead of 3)
    assert count_parameters(patched) - count_parameters(plain) == 9 * 9 * 16 + 9 * 16 * 9 + 9
    assert "patch_size" not in plain.config.to_dict() and patched.config.to_dict()["patch_size"] == 2
