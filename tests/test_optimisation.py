"""The optimisation step runs and distillations share: clipping, the optimizer's step, the weight average, the
losses read from the device and checked."""
import math

import pytest
import torch
from torch import nn

from cldiff_bench.errors import UserError
from cldiff_bench.optimisation import GRAD_CLIP, DeferredLosses, WeightAverage, optimisation_step
from tests.test_distill import micro_engine


def linear(seed: int = 0) -> nn.Linear:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(4, 1)


def weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


@pytest.mark.parametrize("scale", [1e3, 1e-3])
def test_the_step_clips_the_gradient_norm_to_grad_clip_and_leaves_a_smaller_one(scale):
    model = linear()
    before = weights(model)
    loss = scale * model(torch.ones(2, 4)).sum()
    loss.backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()]).clone()
    optimisation_step(scale * model(torch.ones(2, 4)).sum(), model, torch.optim.SGD(model.parameters(), lr=1.0), None)
    moved = before - weights(model)  # plain SGD at rate 1 moves the weights by the gradient it was given
    if gradient.norm() > GRAD_CLIP:
        assert moved.norm().item() == pytest.approx(GRAD_CLIP, rel=1e-5)
        assert torch.allclose(moved / moved.norm(), gradient / gradient.norm(), atol=1e-6)
    else:
        assert torch.allclose(moved, gradient, atol=1e-6)


def test_the_step_sets_stale_gradients_aside_and_updates_the_average_with_the_new_weights():
    model = linear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    average = WeightAverage(model, linear(seed=1), decay=0.999)
    start = weights(model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)  # left over: the step starts from zero gradients
    loss = model(torch.ones(1, 4)).sum()  # gradient 1 for each weight and the bias: norm sqrt(5) > GRAD_CLIP
    optimisation_step(loss, model, optimizer, average)
    assert torch.allclose(start - weights(model), torch.full((5,), 0.1 / math.sqrt(5)), atol=1e-6)
    # the first update keeps min(0.999, 1/10) of the average, which started as the model's weights
    assert torch.allclose(weights(average.weights), 0.1 * start + 0.9 * weights(model), atol=1e-6)
    assert average.updates == 1


def test_the_average_warms_up_its_decay_is_frozen_and_resumes_from_its_state():
    model = linear()
    average = WeightAverage(model, linear(seed=1), decay=0.5)
    assert torch.equal(weights(average.weights), weights(model)) and not average.weights.training
    assert not any(p.requires_grad for p in average.weights.parameters())
    kept = []
    for _ in range(12):
        old = weights(average.weights)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        average.update(model)
        kept.append(((weights(average.weights) - weights(model)) / (old - weights(model))).mean().item())
    # (1 + n) / (10 + n) until it reaches the decay: 1/10, 2/11, ... then 0.5 from n = 8 on
    assert kept == pytest.approx([min(0.5, (1 + n) / (10 + n)) for n in range(12)], rel=1e-4)
    other = WeightAverage(model, linear(seed=2), decay=0.5)
    other.load_state_dict(average.state_dict())
    assert other.updates == 12 and torch.equal(weights(other.weights), weights(average.weights))


def test_deferred_losses_are_read_at_once_in_order_and_the_first_non_finite_loss_trained_on_is_named():
    losses = DeferredLosses()
    for v in (1.0, 2.0, float("nan"), float("inf")):
        losses.add(torch.tensor(v, requires_grad=True) * 1)
    assert len(losses) == 4
    values, bad = losses.read()
    assert values[:2] == [1.0, 2.0] and math.isnan(values[2]) and bad == 2
    assert not losses  # read: the next window starts empty
    losses.add(torch.tensor(3.0))
    assert losses.read() == ([3.0], None)


def test_rows_of_losses_are_checked_on_the_loss_trained_on_only():
    rows = DeferredLosses()
    rows.add(torch.tensor([1.0, 1.0, float("inf")]))  # a replay term alone is not what was trained on
    rows.add(torch.tensor([2.0, 2.0, 1.0]))
    assert rows.read() == ([[1.0, 1.0, float("inf")], [2.0, 2.0, 1.0]], None)
    rows.add(torch.tensor([2.0, 2.0, 1.0]))
    rows.add(torch.tensor([float("nan"), 2.0, 1.0]))
    assert rows.read()[1] == 1


def test_a_distillation_takes_the_shared_step_and_stops_on_a_loss_that_is_not_finite():
    engine, core, _ = micro_engine("pd", dict(target_steps=1, from_steps=2, updates=3, batch_size=4, ema_decay=0.9))
    engine.begin_round()
    start = {n: p.detach().clone() for n, p in core.model.named_parameters()}
    engine.step()
    name = next(iter(start))
    trained = core.model.state_dict()[name]
    assert not torch.equal(trained, start[name])
    # its average as a run's: the first update keeps 1/10 of the weights the round started from
    assert torch.allclose(engine.ema.weights.state_dict()[name], 0.1 * start[name] + 0.9 * trained, atol=1e-6)
    engine.read_losses()
    with torch.no_grad():
        next(core.model.parameters()).fill_(float("nan"))  # the student diverged; the round's teacher did not
    engine.step()
    with pytest.raises(UserError, match="the distillation loss became nan in round 0 at update 1; try a lower"):
        engine.read_losses()
