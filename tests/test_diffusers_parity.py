"""Our schedule and DDIM sampler against diffusers' DDIMScheduler configured as the study configured it
(linear betas rescaled to zero terminal SNR, trailing spacing, x0 clipped to [-1, 1])."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from cldiff_bench.core import DiffusionCore, SpeedOptions  # noqa: E402
from cldiff_bench.diffusion import (DDIMSampler, MODEL_PRESETS, NoiseSchedule, model_config,  # noqa: E402
                                    trailing_timesteps)
from cldiff_bench.diffusion.seeding import derive_seeds, per_sample_normal  # noqa: E402

SHAPE = (1, 32, 32)
STEPS = (2, 10)
ETAS = (0.0, 0.7)


def scheduler(alphas_cumprod: torch.Tensor | None = None):
    cfg = NoiseSchedule().config
    s = diffusers.DDIMScheduler(num_train_timesteps=cfg["num_timesteps"], beta_schedule="linear",
                                beta_start=cfg["beta_start"], beta_end=cfg["beta_end"], timestep_spacing="trailing",
                                rescale_betas_zero_snr=True, clip_sample=True)
    if alphas_cumprod is not None:
        s.alphas_cumprod = alphas_cumprod.clone()
    return s


@pytest.fixture(scope="module")
def core():
    config = model_config("tiny", MODEL_PRESETS["tiny"], SHAPE[0])
    # NCHW throughout, as the diffusers loop runs the same module: the memory format's rounding is
    # test_speed_options' subject; here only the sampler's arithmetic is compared.
    return DiffusionCore(config, SHAPE, torch.device("cpu"), init_seed=3, precision="fp32",
                         speed=SpeedOptions(channels_last="off"))


def diffusers_loop(s, model, steps, eta, noise):
    """The plain diffusers loop, fed the noise our sampler draws: noise[:, 0] is x_T, noise[:, 1 + i] step i's."""
    s.set_timesteps(steps)
    x = noise[:, 0]
    with torch.no_grad():
        for i, t in enumerate(s.timesteps):
            eps = model(x, t.expand(len(x)))
            x = s.step(eps, t, x, eta=eta, variance_noise=noise[:, 1 + i] if eta > 0 else None).prev_sample
    return x


def test_schedule_matches_diffusers():
    ours, theirs = NoiseSchedule(), scheduler()
    # Ours is computed in float64 and rounded once, diffusers' in float32: they agree to float32 rounding.
    torch.testing.assert_close(ours.alpha_bar, theirs.alphas_cumprod, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.betas, theirs.betas, rtol=1e-4, atol=1e-5)
    assert ours.alpha_bar[-1] == 0 and theirs.alphas_cumprod[-1] == 0


def diffusers_arithmetic(core, steps, eta):
    """Our sampler without the study's 1e-8 under x0's square root (which tests/test_ddim_study_arithmetic.py
    pins): everything else in the step is compared with diffusers exactly."""
    return DDIMSampler(core.schedule, steps, eta, x0_epsilon=0.0)


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 10, 50, 1000])
def test_trailing_timesteps_match_diffusers(steps):
    s = scheduler()
    s.set_timesteps(steps)
    assert trailing_timesteps(steps) == s.timesteps.tolist()


@pytest.mark.parametrize("eta", ETAS)
@pytest.mark.parametrize("steps", STEPS)
def test_sampling_loop_matches_diffusers(core, steps, eta):
    """The whole loop, through the core as the suite samples. The scheduler is given our alpha_bar so that what is
    compared is the sampler's arithmetic alone; the schedules' float32 rounding is checked above and per step
    below (a random network amplifies their ~4e-7 difference to ~5e-4 over ten steps)."""
    seeds = derive_seeds(4, steps, int(eta * 10))
    ours = diffusers_arithmetic(core, steps, eta).sample(core.model, seeds, SHAPE)
    noise = per_sample_normal(seeds, (1 + (steps if eta > 0 else 0), *SHAPE))
    theirs = diffusers_loop(scheduler(core.schedule.alpha_bar), core.model, steps, eta, noise)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("eta", ETAS)
@pytest.mark.parametrize("steps", STEPS)
def test_every_step_matches_diffusers_own_schedule(core, steps, eta):
    """Each DDIM update against diffusers' step from the same (x_t, eps, noise), with diffusers' own alpha_bar.
    Without the study's 1e-8 both divide by zero at the terminal step, so every step compares, that one included."""
    s, sampler = scheduler(), diffusers_arithmetic(core, steps, eta)
    s.set_timesteps(steps)
    noise = per_sample_normal(derive_seeds(4, 99, steps), (1 + steps, *SHAPE))
    x = noise[:, 0]
    with torch.no_grad():
        for i, t in enumerate(s.timesteps):
            eps = core.model(x, t.expand(len(x)))
            ours, ours_x0 = sampler.step(eps, i, x, noise[:, 1 + i])
            theirs = s.step(eps, t, x, eta=eta, variance_noise=noise[:, 1 + i] if eta > 0 else None)
            torch.testing.assert_close(ours_x0, theirs.pred_original_sample, rtol=1e-5, atol=2e-6)
            torch.testing.assert_close(ours, theirs.prev_sample, rtol=1e-5, atol=2e-6)
            x = ours


def test_terminal_step_differs_from_diffusers_only_where_x_is_within_1e4_of_eps(core):
    """At t = T-1 alpha_bar is exactly 0 and x0 = (x - eps) / sqrt(alpha_bar) has no value. diffusers divides by
    zero (inf, clipped to +-1); we divide by sqrt(alpha_bar + 1e-8) as the study's code does, so |x - eps| >= 1e-4
    clips to the same +-1 and smaller gaps give x0 = (x - eps) * 1e4 in (-1, 1) instead."""
    s, sampler = scheduler(), core.sampler(2)
    s.set_timesteps(2)
    eps = torch.zeros(1, *SHAPE)
    x = torch.full((1, *SHAPE), 2e-4)
    x[..., 0, :4] = torch.tensor([-3e-4, 5e-5, -5e-5, 0.5])
    ours, ours_x0 = sampler.step(eps, 0, x)
    theirs = s.step(eps, s.timesteps[0], x, eta=0.0)
    near = (x - eps).abs() < 1e-4
    assert torch.equal(ours_x0[~near], theirs.pred_original_sample[~near])
    torch.testing.assert_close(ours[~near], theirs.prev_sample[~near], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours_x0[near], torch.tensor([0.5, -0.5]), rtol=1e-5, atol=1e-6)
    assert torch.equal(theirs.pred_original_sample[near], torch.tensor([1.0, -1.0]))
