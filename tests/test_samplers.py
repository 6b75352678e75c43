"""Samplers and prediction types as plug-in points of the core: the registry's contract, the parameterisation's
conversions, and that the core's sampling reads a model's prediction type and a named sampler."""
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from cldiff_bench.core import DiffusionCore
from cldiff_bench.diffusion import DDIMSampler, NoiseSchedule, UNetConfig
from cldiff_bench.diffusion.parameterisation import PREDICTIONS, convert, output_for, x0_and_eps
from cldiff_bench.diffusion.samplers import BUILTIN_SAMPLERS, SamplerSpec
from cldiff_bench.errors import UserError
from cldiff_bench.registry import hookimpl, load_registry
from tests.helpers import MICRO_UNET

SHAPE = (1, 16, 16)


class GaussianDenoiser:
    """The exact E[x0 | x_t] of data x0 ~ N(mu, s^2 I), as a model of any prediction type."""

    def __init__(self, schedule: NoiseSchedule, prediction: str, mu: float = 0.1, s: float = 0.3):
        self.ab, self.prediction, self.mu, self.s = schedule.alpha_bar.double(), prediction, mu, s

    def __call__(self, x, t):
        ab = self.ab[t].view(-1, 1, 1, 1).to(x.dtype)
        a, sigma2 = ab.sqrt(), 1 - ab
        x0 = self.mu + a * self.s ** 2 / (ab * self.s ** 2 + sigma2) * (x - a * self.mu)
        eps = (x - a * x0) / sigma2.sqrt()
        return output_for(self.prediction, x0, eps, ab)


def micro_model(prediction: str, seed: int = 3):
    core = DiffusionCore(replace(MICRO_UNET, prediction=prediction), SHAPE, torch.device("cpu"), init_seed=seed)
    return core, core.frozen_copy(role="student")


SAMPLERS = load_registry(["tests.plugins.ancestral_sampler_plugin"]).samplers()  # the built-ins and a plugin's


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_every_registered_sampler_is_deterministic_and_batch_size_independent(name, prediction):
    core, model = micro_model(prediction)
    seeds = [11, 22, 33, 44, 55]
    sampler = SAMPLERS[name].build(core.schedule, 4, 0.0)
    first = sampler.sample(model, seeds, SHAPE, prediction=prediction)
    again = sampler.sample(model, seeds, SHAPE, prediction=prediction)
    assert first.shape == (5, *SHAPE) and torch.isfinite(first).all()
    assert torch.equal(first, again)
    # Sample i is a function of seed i alone: alone, in another batch, at another position. Equal up to rounding
    # (convolutions over other batch sizes round otherwise), which an epsilon model's x0 at t = 999 amplifies 1e4x.
    alone = sampler.sample(model, [33], SHAPE, prediction=prediction)
    others = sampler.sample(model, [55, 33, 99], SHAPE, prediction=prediction)
    torch.testing.assert_close(alone[0], first[2], atol=1e-3, rtol=0)
    torch.testing.assert_close(others[1], first[2], atol=1e-3, rtol=0)
    torch.testing.assert_close(others[0], first[4], atol=1e-3, rtol=0)
    assert not torch.allclose(first[0], first[1])


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_conversions_round_trip(prediction):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(3, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1, torch.randn(3, 1, 4, 4, generator=g,
                                                                                          dtype=torch.float64)
    ab = torch.tensor([0.9, 0.3, 0.02], dtype=torch.float64).view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    got_x0, got_eps = x0_and_eps(output_for(prediction, x0, eps, ab), x_t, ab, prediction, x0_epsilon=0.0)
    torch.testing.assert_close(got_x0, x0)
    torch.testing.assert_close(got_eps, eps)
    v = convert(eps, x_t, ab, "epsilon", "v", x0_epsilon=0.0)
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0)


def test_a_v_model_says_what_x0_is_where_alpha_bar_is_zero():
    x_t = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    x0 = torch.full_like(x_t, 0.5)
    ab = torch.zeros((), dtype=torch.float64)
    got_x0, got_eps = x0_and_eps(output_for("v", x0, x_t, ab), x_t, ab, "v")
    torch.testing.assert_close(got_x0, x0)
    torch.testing.assert_close(got_eps, x_t)


def test_ddim_reads_the_prediction_type():
    """The exact denoiser gives the same samples whatever its output means, once the sampler is told."""
    schedule = NoiseSchedule()
    sampler = DDIMSampler(schedule, 8)
    seeds = [1, 2, 3]
    samples = {p: sampler.sample(GaussianDenoiser(schedule, p), seeds, SHAPE, dtype=torch.float64, prediction=p)
               for p in ("v", "x0")}
    torch.testing.assert_close(samples["v"], samples["x0"])
    # Read as epsilon, a v model's output samples something else.
    wrong = sampler.sample(GaussianDenoiser(schedule, "v"), seeds, SHAPE, dtype=torch.float64)
    assert (wrong - samples["v"]).abs().max() > 0.1


def test_dpmpp_2m_solves_the_ode_more_accurately_than_ddim_at_the_same_steps():
    schedule = NoiseSchedule()
    model, seeds = GaussianDenoiser(schedule, "x0"), list(range(8))

    def draw(name, steps):
        return BUILTIN_SAMPLERS[name].build(schedule, steps, 0.0).sample(model, seeds, SHAPE, dtype=torch.float64,
                                                                        prediction="x0")
    exact = draw("ddim", 1000)
    error = {(name, steps): (draw(name, steps) - exact).pow(2).mean().item()
             for name in ("ddim", "dpmpp-2m") for steps in (25, 50)}
    assert error["dpmpp-2m", 50] < 0.1 * error["ddim", 50]
    # Second order: the error falls faster with the steps than first-order DDIM's (about 4x per halving in MSE).
    assert error["ddim", 25] / error["ddim", 50] < 6
    assert error["dpmpp-2m", 25] / error["dpmpp-2m", 50] > 12


def test_the_core_samples_a_models_prediction_type_with_the_named_sampler():
    core, model = micro_model("v")
    seeds = [5, 6]
    expected = DDIMSampler(core.schedule, 3).sample(model, seeds, SHAPE, prediction="v")
    torch.testing.assert_close(core.generate(model, seeds, 3), expected)
    as_epsilon = DDIMSampler(core.schedule, 3).sample(model, seeds, SHAPE)
    assert not torch.allclose(core.generate(model, seeds, 3), as_epsilon)
    dpm = BUILTIN_SAMPLERS["dpmpp-2m"].build(core.schedule, 4, 0.0).sample(model, seeds, SHAPE, prediction="v")
    torch.testing.assert_close(core.generate(model, seeds, 4, sampler="dpmpp-2m"), dpm)
    with pytest.raises(UserError, match="unknown sampler 'nope'"):
        core.generate(model, seeds, 2, sampler="nope")


def test_a_plugin_registers_a_sampler_the_core_draws_with():
    calls = []

    class Constant:
        def __init__(self, schedule, steps, eta):
            self.num_steps = steps

        settings = {"sampler": "constant"}

        def sample(self, model, seeds, image_shape, device=None, dtype=torch.float32, prediction="epsilon"):
            calls.append(prediction)
            return torch.full((len(seeds), *image_shape), 0.25)

    plugin = SimpleNamespace(cldiff_bench_samplers=hookimpl(lambda: [SamplerSpec("constant", "a test", Constant)]))
    registry = load_registry()
    registry.register(plugin, "test plugin")
    assert set(registry.samplers()) == {"ddim", "dpmpp-2m", "constant"}
    core = DiffusionCore(replace(MICRO_UNET, prediction="x0"), SHAPE, torch.device("cpu"),
                         samplers=registry.samplers())
    images = core.generate(core.frozen_copy(), [1, 2], 2, sampler="constant")
    assert torch.equal(images, torch.full((2, *SHAPE), 0.25)) and calls == ["x0"]


def test_prediction_type_is_a_model_property_that_old_configurations_lack():
    old = MICRO_UNET.to_dict()
    assert "prediction" not in old  # the default is left out: recorded configurations and hashes stay
    assert UNetConfig.from_dict(old) == MICRO_UNET and MICRO_UNET.prediction == "epsilon"
    v = replace(MICRO_UNET, prediction="v")
    assert v.to_dict()["prediction"] == "v" and UNetConfig.from_dict(v.to_dict()) == v
    with pytest.raises(ValueError, match="prediction type"):
        replace(MICRO_UNET, prediction="score")
