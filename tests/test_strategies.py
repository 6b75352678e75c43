import copy

import pytest
import torch
import torch.nn.functional as F

from cldiff_bench.registry import load_registry
from cldiff_bench.teacher import loss_weights
from cldiff_bench.strategy import PURPOSE_DATA_NOISE, PURPOSE_REPLAY_NOISE

from .helpers import InputRecorder, batch, micro_core

BUILTIN = ["naive", "joint", "gr", "gd", "lwf", "gaussian"]


def make(name, core=None, **overrides):
    cls = load_registry().strategy(name)
    core = core or micro_core()
    return cls(core, cls.resolve_options("digits-5", overrides)), core


def train_step(strategy, core, b):
    opt = torch.optim.Adam(core.model.parameters(), lr=2e-4)
    terms = strategy.batch_loss(b)
    opt.zero_grad()
    terms.total.backward()
    opt.step()
    return terms


def at_task_one(name, **overrides):
    """A strategy after one step of task 0, set up for task 1 (so it has a teacher)."""
    strategy, core = make(name, **overrides)
    strategy.begin_task(0)
    train_step(strategy, core, batch(0, 0))
    strategy.end_task(0)
    strategy.begin_task(1)
    return strategy, core


def test_builtin_strategies_registered():
    assert set(BUILTIN) <= set(load_registry().entries("strategy"))


def test_gd_target_is_teacher_output_on_the_inputs_the_student_saw():
    strategy, core = at_task_one("gd")
    student, teacher = InputRecorder(core.model), InputRecorder(strategy.teacher)
    b = batch(1, 3)
    terms = strategy.batch_loss(b)
    (x_in, t_in, pred), = student.calls
    n = len(b.x0)
    x_replay, t_replay = x_in[n:], t_in[n:]
    teacher_x, teacher_t, teacher_out = teacher.calls[-1]  # the distillation forward comes after the sampling
    assert torch.equal(teacher_x, x_replay) and torch.equal(teacher_t, t_replay)
    assert len(teacher.calls) == 2 + 1  # 2 DDIM steps + one target forward
    assert terms.replay.item() == pytest.approx(F.mse_loss(pred[n:], teacher_out).item(), rel=1e-6)


def test_gr_target_is_the_noise_added_to_teacher_samples():
    strategy, core = at_task_one("gr")
    student = InputRecorder(core.model)
    b = batch(1, 5)
    terms = strategy.batch_loss(b)
    (x_in, t_in, pred), = student.calls
    n = len(b.x0)
    # recompute the replay inputs independently: teacher samples, then the keyed re-noising draw
    samples = core.generate(strategy.teacher, b.sample_seeds(n, 2), 2)
    g = b.generator(PURPOSE_REPLAY_NOISE)
    t_r = torch.randint(0, 1000, (n,), generator=g)
    noise_r = torch.randn(samples.shape, generator=g)
    assert torch.equal(t_in[n:], t_r)
    torch.testing.assert_close(x_in[n:], core.schedule.add_noise(samples, noise_r, t_r))
    assert terms.replay.item() == pytest.approx(F.mse_loss(pred[n:], noise_r).item(), rel=1e-6)


def test_lwf_distils_on_the_current_noisy_batch():
    strategy, core = at_task_one("lwf")
    student, teacher = InputRecorder(core.model), InputRecorder(strategy.teacher)
    b = batch(1, 2)
    strategy.batch_loss(b)
    (x_in, t_in, _), = student.calls
    (tx, tt, _), = teacher.calls
    assert len(x_in) == len(b.x0)  # no extra inputs
    x_t, t, _ = core.training_targets(b.x0, b.generator(PURPOSE_DATA_NOISE))
    torch.testing.assert_close(x_in, x_t)
    assert torch.equal(tx, x_in) and torch.equal(tt, t_in) and torch.equal(t_in, t)


def test_gaussian_inputs_are_standard_normal():
    strategy, core = at_task_one("gaussian")
    student = InputRecorder(core.model)
    b = batch(1, 0, n=64)
    strategy.batch_loss(b)
    (x_in, t_in, _), = student.calls
    replay = x_in[64:]
    assert abs(replay.mean().item()) < 0.02 and abs(replay.std().item() - 1) < 0.02
    assert t_in[64:].min() >= 0 and t_in[64:].max() < 1000 and len(set(t_in[64:].tolist())) > 30


@pytest.mark.parametrize("name", ["gr", "gd", "lwf", "gaussian"])
def test_teacher_is_frozen_and_untouched_by_training(name):
    strategy, core = at_task_one(name)
    before = copy.deepcopy(strategy.teacher.state_dict())
    for it in range(3):
        train_step(strategy, core, batch(1, it))
    assert all(p.grad is None and not p.requires_grad for p in strategy.teacher.parameters())
    for key, value in strategy.teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    # the student did move away from the teacher
    assert any(not torch.equal(v, before[k]) for k, v in core.model.state_dict().items())


def test_loss_weights_per_task():
    assert loss_weights(0, 0.75) == (1.0, 0.0)
    w, r = loss_weights(1, 0.75)
    assert w == pytest.approx(0.5) and r == pytest.approx(0.5 * 0.75)
    w, r = loss_weights(2, 2.0)
    assert w == pytest.approx(1 / 3) and r == pytest.approx(2 / 3 * 2.0)


@pytest.mark.parametrize("k", [1, 2])
def test_total_loss_combines_terms_with_the_task_weights(k):
    strategy, core = make("gd", **{"lambda": 0.5})
    strategy.begin_task(k)
    terms = strategy.batch_loss(batch(k, 0))
    w, r = loss_weights(k, 0.5)
    assert terms.total.item() == pytest.approx(w * terms.data.item() + r * terms.replay.item(), rel=1e-6)


@pytest.mark.parametrize("name,student,teacher", [
    ("naive", 1, 0), ("joint", 1, 0), ("gr", 2, 2), ("gd", 2, 3), ("lwf", 1, 1), ("gaussian", 2, 1),
])
def test_network_evaluations_per_iteration(name, student, teacher):
    """Per image of the real batch: gd = gr + one teacher forward; lwf and gaussian one teacher forward."""
    strategy, core = at_task_one(name)
    before = dict(core.meter.counts)
    train_step(strategy, core, batch(1, 0, n=4))
    counts = core.meter.counts
    assert counts["student_forward"] - before.get("student_forward", 0) == 4 * student
    assert counts["student_backward"] - before.get("student_backward", 0) == 4 * student
    assert counts["teacher_forward"] - before.get("teacher_forward", 0) == 4 * teacher


def test_unknown_or_negative_options_refused():
    from cldiff_bench.errors import UserError
    cls = load_registry().strategy("gd")
    with pytest.raises(UserError, match=">= 0"):
        cls.resolve_options("fmnist-5", {"lambda": -1.0})
    with pytest.raises(UserError, match="takes no option"):
        load_registry().strategy("naive").resolve_options("fmnist-5", {"lambda": 1.0})


def test_per_stream_defaults():
    gd = load_registry().strategy("gd")
    assert gd.resolve_options("fmnist-5", {})["teacher_steps"] == 2
    assert gd.resolve_options("cifar10-5", {})["teacher_steps"] == 10
    assert gd.resolve_options("cifar10-5", {})["lambda"] == 0.75


def test_replay_ahead_draws_the_same_samples_in_fewer_teacher_batches():
    """replay_ahead changes how the teacher's samples are batched, never which samples an iteration gets."""
    from dataclasses import replace

    from cldiff_bench.core import SpeedOptions

    per_iteration, _ = at_task_one("gr")
    ahead, ahead_core = at_task_one("gr")
    ahead_core.speed = SpeedOptions(replay_ahead=3)
    calls = InputRecorder(ahead.teacher)
    generated_before = ahead_core.meter.snapshot()["counts"]["images_generated"]
    sizes = [4, 4, 4, 4, 2]  # the last batch of an epoch can be smaller
    for it, n in enumerate(sizes):
        b = replace(batch(1, it, n=n), iterations=len(sizes))
        torch.testing.assert_close(ahead.teacher_samples(b), per_iteration.teacher_samples(b), atol=1e-4, rtol=0)
    # Two teacher batches (iterations 0-2, then 3-4 as the task ends there) of 2 DDIM steps each, not five.
    assert [len(x) for x, _, _ in calls.calls] == [12, 12, 8, 8]
    assert ahead_core.meter.snapshot()["counts"]["images_generated"] - generated_before == 20
    assert not ahead._replay_queue  # nothing left over for iterations that do not exist
