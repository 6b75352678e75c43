"""The `cpu` profile's budget choices: smaller images, a cosine learning-rate schedule, sampling from an EMA of the
weights; that each reaches the run, is recorded, and is what the optimizer, the teacher and the saved models use."""
import json
import math

import pytest
import torch

from cldiff_bench import training
from cldiff_bench.cli import main
from cldiff_bench.core import DiffusionCore
from cldiff_bench.errors import UserError
from cldiff_bench.profiles import DEFAULT_PROFILE
from cldiff_bench.registry import load_registry
from cldiff_bench.settings import Budget, RunConfig, resolve_settings
from cldiff_bench.streams.base import ImageSet, Stream, Task
from tests.helpers import MICRO_UNET


def _settings(profile="cpu", stream="fmnist-5", **overrides):
    return resolve_settings(RunConfig(strategy="gd", stream=stream, profile=profile, device="cpu", **overrides),
                            load_registry())


def test_cpu_profile_is_the_default_and_its_choices_reach_the_settings():
    assert DEFAULT_PROFILE == "cpu" and RunConfig(strategy="gd", stream="fmnist-5").profile == "cpu"
    budget = _settings().budget
    assert (budget.image_size, budget.iterations, budget.batch_size) == (16, 600, 64)
    assert (budget.lr_schedule, budget.warmup_iterations, budget.ema_decay) == ("cosine", 50, 0.995)
    assert budget.learning_rate == 2e-3
    evaluation = _settings().recorded_evaluation()
    assert evaluation["solver_epochs"] == 2 and evaluation["solver_max_images"] == 3000
    # overrides: EMA off with 0, the suite's own size spelled out is the default size (one identity)
    off = _settings(budget=dict(ema_decay=0.0, image_size=32, lr_schedule="constant")).budget
    assert off.ema_decay is None and off.image_size is None and off.lr_schedule == "constant"


@pytest.mark.parametrize("bad", [dict(ema_decay=1.0), dict(image_size=12), dict(lr_schedule="linear"),
                                 dict(warmup_iterations=-1)])
def test_bad_budget_choices_are_refused_before_any_work(bad):
    with pytest.raises(UserError):
        _settings(budget=bad)


def test_cosine_schedule_warms_up_then_decays_to_zero_and_constant_is_flat():
    b = Budget("x", "small", None, 64, 100, 1e-3, 16, lr_schedule="cosine", warmup_iterations=10)
    rates = [b.learning_rate_at(i, 100) for i in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a < b_ for a, b_ in zip(rates[:10], rates[1:10]))        # rising during warm-up
    assert all(a >= b_ for a, b_ in zip(rates[10:], rates[11:]))       # falling after it
    assert rates[10] == pytest.approx(1e-3) and rates[-1] < 1e-3 * 0.01
    flat = Budget("x", "small", None, 64, 100, 1e-3, 16)
    assert {flat.learning_rate_at(i, 100) for i in range(100)} == {1e-3}


def test_stream_at_a_smaller_size_resizes_every_image_and_names_the_size():
    images = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    task = Task(0, [0, 1], ImageSet(images, labels), ImageSet(images[:2], labels[:2]))
    stream = Stream("s", "data", 2, ["a", "b"], (1, 32, 32), [0, 1], [task], 0)
    small = stream.at_size(16)
    assert small.image_shape == (1, 16, 16) and small.tasks[0].train.images.shape == (6, 1, 16, 16)
    assert small.tasks[0].test.images.shape == (2, 1, 16, 16)
    assert small.dataset != stream.dataset  # the evaluation classifier of one size is never reused at another
    # a 2x2 average of a constant image is that constant: resizing keeps the intensities
    flat = torch.full((1, 1, 32, 32), 200, dtype=torch.uint8)
    assert ImageSet(flat, labels[:1]).resized(16).images.unique().tolist() == [200]
    assert stream.at_size(None) is stream and stream.at_size(32) is stream


def test_ema_tracks_the_trained_weights_and_is_what_is_sampled():
    core = DiffusionCore(MICRO_UNET, (1, 32, 32), torch.device("cpu"), init_seed=0, ema_decay=0.9)
    start = {k: v.clone() for k, v in core.model.state_dict().items()}
    with torch.no_grad():
        for p in core.model.parameters():
            p.add_(1.0)
    core.ema.update(core.model)  # first update: decay warms up to min(0.9, 1/10) = 0.1 of the old average kept
    name = next(n for n, _ in core.model.named_parameters())
    expected = 0.1 * start[name] + 0.9 * (start[name] + 1.0)
    assert torch.allclose(core.sampling_state_dict()[name], expected, atol=1e-6)
    assert torch.allclose(core.model.state_dict()[name], start[name] + 1.0)  # training keeps the raw weights
    teacher = core.make_teacher()
    assert torch.allclose(teacher.state_dict()[name], expected, atol=1e-6)
    plain = DiffusionCore(MICRO_UNET, (1, 32, 32), torch.device("cpu"), init_seed=0)
    # no EMA: the trained weights are sampled
    assert plain.ema is None and plain.ema_state() is None
    assert torch.equal(plain.sampling_state_dict()[name], start[name])


def _digits_run(tmp_path, *extra):
    code = main(["run", "--strategy", "gr", "--stream", "digits-5", "--profile", "tiny", "--iterations", "6",
                 "--no-eval", "--no-progress", "--out", str(tmp_path), *extra])
    assert code == 0
    run_dir = tmp_path / "digits-5/tiny/gr/seed0"
    return run_dir, json.loads((run_dir / "result.json").read_text())


def test_the_schedule_reaches_adam_and_every_choice_is_recorded(tmp_path, monkeypatch):
    rates = []

    class ObservedAdam(torch.optim.Adam):
        def step(self, *args, **kwargs):
            rates.append(self.param_groups[0]["lr"])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(training.torch.optim, "Adam", ObservedAdam)
    _, result = _digits_run(tmp_path, "--lr-schedule", "cosine", "--warmup-iterations", "2", "--learning-rate",
                            "0.01", "--ema-decay", "0.9", "--image-size", "16")
    budget = Budget(**result["config"]["budget"])
    assert rates == [budget.learning_rate_at(i, 6) for i in range(6)] * 5
    assert rates[0] == pytest.approx(0.005) and rates[1] == pytest.approx(0.01)
    assert result["config"]["optimizer"]["lr_schedule"] == "cosine"
    assert result["config"]["ema"]["decay"] == 0.9
    assert result["stream"]["image_shape"] == [1, 16, 16]
    assert math.isclose(budget.ema_decay, 0.9) and budget.image_size == 16


def test_saved_task_models_are_the_ema_weights(tmp_path):
    run_dir, _ = _digits_run(tmp_path, "--ema-decay", "0.9", "--checkpoint-every", "3")
    ema = torch.load(run_dir / "models/task4.pt", weights_only=True)
    ema = ema.get("model", ema)
    raw = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert raw["ema"] is not None
    assert torch.equal(ema[next(iter(ema))], raw["ema"]["weights"][next(iter(ema))])
    assert not all(torch.equal(ema[k], raw["model"][k]) for k in ema)
