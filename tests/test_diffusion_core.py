import copy
import math

import numpy as np
import pytest
import torch

from cldiff_bench.diffusion import DDIMSampler, NoiseSchedule, UNet, count_parameters, model_config, trailing_timesteps
from cldiff_bench.diffusion.seeding import per_sample_normal
from cldiff_bench.diffusion.unet import MODEL_PRESETS


def reference_alpha_bar():
    """Lin et al.'s Algorithm 1 written out independently in float64."""
    betas = np.linspace(1e-4, 0.02, 1000)
    s = np.sqrt(np.cumprod(1 - betas))
    s = (s - s[-1]) * s[0] / (s[0] - s[-1])
    return s**2


def test_alpha_bar_golden_values():
    ab = NoiseSchedule().alpha_bar
    assert ab[0].item() == pytest.approx(1 - 1e-4, abs=1e-7)  # the rescale keeps the first value
    assert ab[499].item() == pytest.approx(0.07602874, rel=1e-5)
    assert ab[999].item() == 0.0  # exactly zero terminal SNR
    np.testing.assert_allclose(ab.numpy(), reference_alpha_bar(), rtol=1e-5, atol=1e-9)
    assert torch.all(ab[1:] < ab[:-1])


def test_schedule_lives_on_requested_device():
    s = NoiseSchedule(device="cpu")
    assert s.alpha_bar.device.type == "cpu" and s.sqrt_alpha_bar.dtype == torch.float32


@pytest.mark.parametrize("steps,grid", [
    (1, [999]),
    (2, [999, 499]),
    (10, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    (20, [999 - 50 * i for i in range(20)]),
])
def test_trailing_timestep_grids(steps, grid):
    assert trailing_timesteps(steps) == grid


def test_bad_step_counts_refused():
    for bad in (0, -1, 1001):
        with pytest.raises(ValueError):
            trailing_timesteps(bad)


def test_one_ddim_step_matches_hand_computation():
    schedule = NoiseSchedule()
    sampler = DDIMSampler(schedule, 10, eta=0.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 4, 4, generator=g) * 0.5
    eps = torch.randn(3, 1, 4, 4, generator=g) * 0.5
    # step 1 of the 10-step grid: t = 899 -> 799
    a_t = reference_alpha_bar()[899]
    a_prev = reference_alpha_bar()[799]
    x0 = np.clip((x.numpy() - math.sqrt(1 - a_t) * eps.numpy()) / math.sqrt(a_t), -1, 1)
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps.numpy()
    got, got_x0 = sampler.step(eps, 1, x)
    np.testing.assert_allclose(got_x0.numpy(), x0, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_first_step_at_zero_snr_is_finite_and_clamped():
    sampler = DDIMSampler(NoiseSchedule(), 2)
    x = torch.randn(2, 1, 8, 8)
    eps = x + 0.01 * torch.randn_like(x)
    x_prev, x0 = sampler.step(eps, 0, x)
    assert torch.isfinite(x_prev).all()
    assert x0.abs().max() <= 1.0
    # alpha_bar = 0 and the study's sqrt(alpha_bar + 1e-8): x0 = (x - eps) / 1e-4, clamped
    np.testing.assert_allclose(x0.numpy(), ((x - eps) / 1e-4).clamp(-1, 1).numpy(), rtol=1e-5, atol=1e-6)


def test_last_step_returns_predicted_x0():
    sampler = DDIMSampler(NoiseSchedule(), 2)
    x, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4) * 0.1
    x_prev, x0 = sampler.step(eps, 1, x)
    torch.testing.assert_close(x_prev, x0)


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(0)
    return UNet(model_config("tiny", MODEL_PRESETS["tiny"], 1)).eval()


def test_eta_zero_is_deterministic_and_eta_positive_uses_seeds(tiny_unet):
    schedule = NoiseSchedule()
    seeds = [11, 12, 13]
    a = DDIMSampler(schedule, 2).sample(tiny_unet, seeds, (1, 32, 32))
    b = DDIMSampler(schedule, 2).sample(tiny_unet, seeds, (1, 32, 32))
    assert torch.equal(a, b)
    c = DDIMSampler(schedule, 2, eta=1.0).sample(tiny_unet, seeds, (1, 32, 32))
    d = DDIMSampler(schedule, 2, eta=1.0).sample(tiny_unet, seeds, (1, 32, 32))
    assert torch.equal(c, d) and not torch.equal(a, c)


def test_sample_depends_only_on_its_seed(tiny_unet):
    """Sample i is a function of seeds[i] alone. The network's own batch dependence (another convolution algorithm
    per batch size sums in another order) is amplified up to 1e4 times by the first step's 1 / sqrt(0 + 1e-8), so
    in float32 the comparison would need a tolerance no test could justify. In float64 the same rounding is ~1e-16,
    so 1e-9 is a bound on the sampler's contribution on any CPU."""
    sampler = DDIMSampler(NoiseSchedule(), 2)
    model = copy.deepcopy(tiny_unet).double()
    seeds = list(range(1000, 1064))
    batch = sampler.sample(model, seeds, (1, 32, 32), dtype=torch.float64)
    alone = sampler.sample(model, [seeds[37]], (1, 32, 32), dtype=torch.float64)
    torch.testing.assert_close(batch[37:38], alone, rtol=0, atol=1e-9)
    assert not torch.allclose(batch[0], batch[1])
    assert batch.abs().max() <= 1.0 + 1e-6
    # The starting noise itself is bit-identical: it is drawn per seed, not per batch.
    assert torch.equal(per_sample_normal(seeds, (1, 32, 32))[37], per_sample_normal([seeds[37]], (1, 32, 32))[0])


@pytest.mark.parametrize("preset,channels,expected", [("paper-fmnist", 1, 42.9e6), ("paper-cifar10", 3, 35.7e6)])
def test_paper_presets_have_the_study_parameter_counts(preset, channels, expected):
    n = count_parameters(UNet(model_config(preset, MODEL_PRESETS[preset], channels)))
    assert abs(n - expected) / expected < 0.005


def test_unet_output_shape_and_time_dependence(tiny_unet):
    x = torch.randn(2, 1, 32, 32)
    out0 = tiny_unet(x, torch.tensor([0, 0]))
    out1 = tiny_unet(x, torch.tensor([999, 999]))
    assert out0.shape == x.shape and not torch.allclose(out0, out1)


def test_paper_preset_refuses_wrong_channel_count():
    with pytest.raises(ValueError, match="1-channel"):
        model_config("paper-fmnist", MODEL_PRESETS["paper-fmnist"], 3)
