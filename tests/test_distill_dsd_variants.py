"""Direct self-distillation's variants: the anchored update (the DSD paper's Eq. 1), the paper's neighbours
schedule (DSDN) and its optimisation (warm-up, cosine, weight decay), each recorded only when used."""
import contextlib
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cldiff_bench.cli import main
from cldiff_bench.diffusion import NoiseSchedule
from cldiff_bench.distill import BUILTIN_METHODS, DistillOptions
from cldiff_bench.distill.base import Round, plan_rounds
from cldiff_bench.distill.dsd import anchored_update, neighbour_update, self_taught_update
from cldiff_bench.distill.engine import Distillation
from cldiff_bench.distill.objective import step_grid
from cldiff_bench.errors import UserError
from tests.test_distill import distill_args, micro_engine, model_file


class PointDenoiser(nn.Module):
    """The exact v of data that is one image x*: eps = (z - alpha x*) / sigma, v = alpha eps - sigma x*; plus a
    constant error `delta`."""

    def __init__(self, schedule, x_star, delta=0.0):
        super().__init__()
        self.alpha_bar, self.x_star, self.delta = schedule.alpha_bar, x_star, delta

    def forward(self, z, t):
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        eps = (z - a * self.x_star) / s
        return a * eps - s * self.x_star + self.delta


def toy_engine(model, schedule, steps, beta):
    """What the updates read of an engine, in float64, around `model`."""
    engine = SimpleNamespace(grid=step_grid(schedule, steps), model=model,
                             core=SimpleNamespace(autocast=contextlib.nullcontext),
                             options=SimpleNamespace(anchor_weight=beta))
    engine.student_output = lambda z, pos: model(z, engine.grid[0][pos])
    engine.path_step = lambda m, prediction, z, pos: Distillation.path_step(engine, m, prediction, z, pos)
    return engine


def noised_images(engine, x_star, pos, seed=0):
    eps = torch.randn((len(pos), *x_star.shape[1:]), generator=torch.Generator().manual_seed(seed),
                      dtype=torch.float64)
    ab = engine.grid[1][pos].view(-1, 1, 1, 1)
    engine.anchor_x0, engine.anchor_eps = x_star.expand(len(pos), -1, -1, -1), eps
    return ab.sqrt() * x_star + (1 - ab).sqrt() * eps


@pytest.fixture
def schedule():
    s = NoiseSchedule()
    s.alpha_bar = s.alpha_bar.double()
    return s


def test_the_anchored_update_has_no_loss_at_the_exact_denoiser_and_weighs_its_two_terms(schedule):
    x_star = torch.linspace(-0.8, 0.8, 16, dtype=torch.float64).view(1, 1, 4, 4)
    pos = torch.tensor([0, 2, 4, 6, 0, 6])  # every start of a student step, the first at alpha = 0
    round_ = Round(8, 4, self_taught=True)
    exact = toy_engine(PointDenoiser(schedule, x_star), schedule, 8, beta=0.15)
    loss, _ = anchored_update(exact, noised_images(exact, x_star, pos), pos, round_)
    assert loss.item() < 1e-12  # float64 round-off, weighted by SNRs up to about 1e4
    # With an error, beta = 1 is DSD's own self term and a vanishing beta the v-loss on the data alone.
    delta = 0.05
    wrong = lambda beta: toy_engine(PointDenoiser(schedule, x_star, delta), schedule, 8, beta)  # noqa: E731
    engine = wrong(1.0)
    z = noised_images(engine, x_star, pos)
    self_term, _ = self_taught_update(engine, z, pos, round_)
    assert anchored_update(engine, z, pos, round_)[0].item() == pytest.approx(self_term.item(), rel=1e-12)
    engine = wrong(1e-12)
    z = noised_images(engine, x_star, pos)
    assert anchored_update(engine, z, pos, round_)[0].item() == pytest.approx(delta ** 2, rel=1e-9)
    half = wrong(0.5)
    z = noised_images(half, x_star, pos)
    assert anchored_update(half, z, pos, round_)[0].item() == pytest.approx(
        0.5 * delta ** 2 + 0.5 * self_term.item(), rel=1e-9)


def test_the_neighbour_update_has_no_loss_at_the_exact_denoiser_and_moves_two_grid_points(schedule):
    x_star = torch.linspace(-0.5, 0.5, 16, dtype=torch.float64).view(1, 1, 4, 4)
    engine = toy_engine(PointDenoiser(schedule, x_star), schedule, 64, beta=None)
    pos = torch.tensor([0, 10, 30, 62])
    z = noised_images(engine, x_star, pos)
    loss, z_end = neighbour_update(engine, z, pos, Round(64, 32, True, neighbours_to=2))
    assert loss.item() < 1e-12  # float64 round-off, weighted by SNRs up to about 1e4
    ab_end = engine.grid[1][pos + 2].view(-1, 1, 1, 1)  # the exact path keeps the noise: two points on
    torch.testing.assert_close(z_end, ab_end.sqrt() * x_star + (1 - ab_end).sqrt() * engine.anchor_eps)
    wrong = toy_engine(PointDenoiser(schedule, x_star, 0.05), schedule, 64, beta=None)
    assert neighbour_update(wrong, noised_images(wrong, x_star, pos), pos, Round(64, 32, True, 2))[0].item() > 0


def test_the_neighbours_schedule_is_one_round_on_the_fine_grid_sampled_at_the_target():
    dsd = BUILTIN_METHODS["dsd"]
    options = DistillOptions(method="dsd", target_steps=2, from_steps=64, schedule="neighbours")
    assert plan_rounds(dsd, options, "v") == [Round(64, 32, True, neighbours_to=2)]
    assert [r.converts for r in plan_rounds(dsd, options, "epsilon")] == [True, False]  # an epsilon model converts
    assert plan_rounds(dsd, options, "v")[0].to_dict()["neighbours_to"] == 2
    assert "neighbours_to" not in Round(4, 2, True).to_dict()  # halving rounds' records stay as they were
    for method in ("pd", "dsd-anchored"):
        with pytest.raises(UserError, match="a schedule of dsd's"):
            plan_rounds(BUILTIN_METHODS[method], DistillOptions(method=method, target_steps=2, from_steps=64,
                                                                schedule="neighbours"), "v")
    engine, core, _ = micro_engine("dsd", dict(target_steps=2, from_steps=8, updates=3, batch_size=4,
                                               schedule="neighbours"), teacher_prediction="v")
    engine.begin_round()
    before = core.meter.snapshot()["counts"]
    engine.step()
    after = core.meter.snapshot()["counts"]
    assert after["student_forward"] - before["student_forward"] == 2 * 4  # 2 evaluations per update, as dsd's
    assert engine.chains.pos.tolist() == [2, 4, 6, 0]  # the chains moved on two points of the 8-step grid


def test_the_papers_optimisation_warms_up_then_decays_and_is_recorded_only_when_set():
    plain = DistillOptions(method="dsd", target_steps=2)
    assert set(plain.to_dict()) == {"method", "target_steps", "from_steps", "updates", "batch_size", "learning_rate",
                                    "ema_decay"}  # the options of every distillation made before these existed
    paper = DistillOptions(method="dsd", target_steps=2, updates=100, learning_rate=1e-6, lr_schedule="cosine",
                           warmup_fraction=0.05, final_learning_rate=1e-7, weight_decay=5e-4, schedule="neighbours")
    assert {k: paper.to_dict()[k] for k in ("lr_schedule", "warmup_fraction", "final_learning_rate", "weight_decay",
                                             "schedule")} == {"lr_schedule": "cosine", "warmup_fraction": 0.05,
                                                              "final_learning_rate": 1e-7, "weight_decay": 5e-4,
                                                              "schedule": "neighbours"}
    round_ = Round(64, 32, True, 2)
    rates = [paper.learning_rate_at(round_, u) for u in range(100)]
    assert rates[0] == pytest.approx(1e-6 / 5) and rates[4] == pytest.approx(1e-6)  # 5 warm-up updates
    assert rates[99] == pytest.approx(1e-7, rel=1e-2) and all(a >= b for a, b in zip(rates[4:], rates[5:]))
    anchored = DistillOptions(method="dsd-anchored", target_steps=2)
    assert anchored.to_dict(recorded_anchor=True)["anchor_weight"] == 0.15 and "anchor_weight" not in plain.to_dict()


@pytest.mark.parametrize("extra,message", [
    (["--lr-schedule", "cosine", "--warmup-fraction", "1.5"], "--warmup-fraction must lie in [0, 1)"),
    (["--final-learning-rate", "1"], "--final-learning-rate must lie in [0, --learning-rate]"),
    (["--weight-decay", "-1"], "--weight-decay must be >= 0"),
    (["--method", "dsd-anchored", "--anchor-weight", "0"], "--anchor-weight must lie in (0, 1]"),
    (["--schedule", "neighbours"], "--schedule neighbours is a schedule of dsd's, not of pd's"),
    (["--anchor", "samples"], "--anchor sets the images of a method that learns from them (dsd-anchored); pd learns "
                              "from none"),
    (["--method", "dsd-anchored", "--anchor", "samples", "--anchor-images", "0"], "--anchor-images must be a whole "
                                                                                 "number >= 1"),
])
def test_bad_variant_options_are_one_line_and_exit_2(tmp_path, capsys, extra, message):
    model, _ = model_file(tmp_path)
    assert main(distill_args(model, tmp_path / "out", "--no-eval", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_anchored_distillation_learns_from_the_tasks_images_and_records_where_they_come_from(tmp_path):
    import json
    model, _ = model_file(tmp_path)
    out = tmp_path / "anchored"
    assert main(distill_args(model, out, "--no-eval", "--method", "dsd-anchored", "--from-steps", "4",
                             "--target-steps", "2", "--updates", "2", "--batch-size", "4", "--anchor-weight",
                             "0.5", "--lr-schedule", "cosine", "--weight-decay", "5e-4")) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["options"]["anchor_weight"] == 0.5 and config["options"]["lr_schedule"] == "cosine"
    assert "task 0's" in config["data"] and "training images" in config["data"]
    assert (out / "models/steps2.pt").is_file() and (out / "model.pt").is_file()


def test_an_anchor_of_samples_is_the_input_models_own_ddim_samples_drawn_once_and_recorded(tmp_path):
    import json

    from cldiff_bench.core import DiffusionCore
    from cldiff_bench.distill.anchor import sample_pool
    from tests.helpers import MICRO_UNET

    model, core = model_file(tmp_path)
    teacher = core.frozen_copy(role=None)
    pool = sample_pool(core, teacher, steps=4, n=5, keys=(3,))
    again = sample_pool(DiffusionCore(MICRO_UNET, core.image_shape, torch.device("cpu")), teacher, 4, 5, (3,))
    first = pool(list(range(5)))
    torch.testing.assert_close(first, again(list(range(5))))  # keyed: the same pool wherever it is drawn
    torch.testing.assert_close(pool([7, 5]), first[[2, 0]])  # a seed picks its image modulo the pool's size
    from cldiff_bench.diffusion.seeding import derive_seed
    from cldiff_bench.distill.anchor import PURPOSE_ANCHOR_POOL
    alone = core.generate(teacher, [derive_seed(3, PURPOSE_ANCHOR_POOL, 1)], 4)  # batch of 1: float round-off
    torch.testing.assert_close(first[1:2], alone, atol=1e-4, rtol=0)

    out = tmp_path / "anchored-samples"
    assert main(distill_args(model, out, "--no-eval", "--method", "dsd-anchored", "--from-steps", "4",
                             "--target-steps", "2", "--updates", "2", "--batch-size", "4", "--anchor", "samples",
                             "--anchor-images", "8")) == 0
    recorded = json.loads((out / "config.json").read_text())["config"]
    assert recorded["options"]["anchor_source"] == "samples" and recorded["options"]["anchor_images"] == 8
    assert "8 samples of the input model (DDIM, 4 steps), no training image" in recorded["data"]
    counts = json.loads((out / "distill.json").read_text())["cost"]["counts"]
    # The pool (8 x 4 teacher evaluations), the conversion round (2 x 4 of the teacher, its chains spread with
    # 1 + 2 + 3) and the anchored round (2 x 2 x 4 of the trained model, no chains).
    assert counts["teacher_forward"] == 8 * 4 + 2 * 4 + 6
