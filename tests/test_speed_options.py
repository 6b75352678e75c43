"""Speed options change how the U-Net runs, never what it computes beyond float rounding."""
import pytest
import torch
import torch.nn.functional as F

from cldiff_bench.core import DiffusionCore, SpeedOptions, cpu_supports_bf16, is_channels_last
from cldiff_bench.diffusion.unet import MODEL_PRESETS, model_config
from cldiff_bench.errors import UserError

SEEDS = list(range(6))


def make_core(**speed) -> DiffusionCore:
    cfg = model_config("tiny", MODEL_PRESETS["tiny"], 1)
    return DiffusionCore(cfg, (1, 32, 32), torch.device("cpu"), init_seed=3, precision="fp32",
                         speed=SpeedOptions(**speed))


def one_training_loss(core: DiffusionCore) -> float:
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 32, 32, generator=g) * 2 - 1
    x_t, t, noise = core.training_targets(x0, g)
    loss = F.mse_loss(core.model(x_t, t), noise)
    loss.backward()
    return float(loss.detach())


def test_channels_last_for_inference_samples_the_same_and_leaves_training_in_nchw():
    plain, fast = make_core(channels_last="off"), make_core()
    assert fast.speed.channels_last == "inference"
    expected = plain.generate(plain.model, SEEDS, 2)
    got = fast.generate(fast.model, SEEDS, 2)
    # The first step divides by sqrt(alpha_bar floor) = 1e-4, which scales rounding differences up.
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert not is_channels_last(fast.model)          # the student trains in NCHW
    assert is_channels_last(fast.make_teacher())     # teachers only ever sample
    teacher = fast.make_teacher()
    torch.testing.assert_close(fast.generate(teacher, SEEDS, 2), expected, atol=1e-4, rtol=0)


def test_channels_last_everywhere_trains_the_same():
    plain, nhwc = make_core(channels_last="off"), make_core(channels_last="all")
    assert is_channels_last(nhwc.model) and not is_channels_last(plain.make_teacher())
    assert one_training_loss(nhwc) == pytest.approx(one_training_loss(plain), rel=1e-5)
    for p, q in zip(plain.model.parameters(), nhwc.model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4)


def test_unknown_channels_last_mode_is_refused_with_the_choices():
    with pytest.raises(UserError, match="inference"):
        SpeedOptions(channels_last="nhwc")


@pytest.mark.slow  # compiling takes minutes on a CPU
def test_compiled_unet_samples_the_same_compiles_once_per_role_and_every_forward_is_still_counted():
    from torch._dynamo.utils import counters

    plain, compiled = make_core(channels_last="off"), make_core(compile=True)
    graphs = lambda: counters["stats"]["unique_graphs"]  # noqa: E731 (dynamo's count of graphs it compiled)
    expected = plain.generate(plain.make_teacher(), SEEDS, 2)
    torch.testing.assert_close(compiled.generate(compiled.make_teacher(), SEEDS, 2), expected, atol=1e-4, rtol=0)
    after_first = graphs()
    # Another teacher, a frozen student copy and a smaller batch reuse the sampling graph: weights are its inputs,
    # the batch dimension is dynamic.
    torch.testing.assert_close(compiled.generate(compiled.frozen_copy(role="student"), SEEDS[:4], 2), expected[:4],
                               atol=1e-4, rtol=0)
    compiled.generate(compiled.make_teacher(plain.model.state_dict()), SEEDS[:3], 2)
    assert graphs() == after_first
    # Training: one graph for the forward and backward at the batch size and at a smaller last batch.
    assert one_training_loss(compiled) == pytest.approx(one_training_loss(plain), rel=1e-4)
    after_training = graphs()
    g = torch.Generator().manual_seed(1)
    x_t, t, noise = compiled.training_targets(torch.rand(3, 1, 32, 32, generator=g) * 2 - 1, g)
    F.mse_loss(compiled.model(x_t, t), noise).backward()
    assert graphs() == after_training
    # Every forward counted: 2 steps of 6 + 3 teacher samples, 2 of 4 student samples, training batches of 4 and 3.
    counts = compiled.meter.snapshot()["counts"]
    assert counts["teacher_forward"] == 2 * (6 + 3) and counts["images_generated"] == 6 + 4 + 3
    assert counts["student_forward"] == 2 * 4 + 4 + 3 and counts["student_backward"] == 4 + 3
    assert set(compiled.model.state_dict()) == set(plain.model.state_dict())  # checkpoints are unaffected


def test_bfloat16_frozen_copy_samples_exactly_as_autocast_and_leaves_the_student_in_float32():
    cfg = model_config("tiny", MODEL_PRESETS["tiny"], 1)
    # NCHW for both, so that only the weights' precision differs between the two paths compared.
    core = DiffusionCore(cfg, (1, 32, 32), torch.device("cpu"), init_seed=3, precision="bf16",
                         speed=SpeedOptions(channels_last="off"))
    frozen = core.frozen_copy(role="student")
    assert frozen.conv_in.weight.dtype == torch.bfloat16 and frozen.conv_out.weight.dtype == torch.bfloat16
    assert frozen.norm_out.weight.dtype == torch.float32          # norms run in float32 under autocast
    assert all(p.dtype == torch.float32 for p in core.model.parameters())
    # Autocast rounds the student's float32 weights to the values the copy stores, so the samples are identical
    # where the CPU computes in bfloat16 natively; where it emulates it, the two paths run different kernels and
    # agree to bfloat16's precision (measured on an AVX2 CPU: mean difference 0.0013 on images of mean magnitude
    # 0.76; other seeds' samples differ by 0.9).
    copied, autocast = core.generate(frozen, SEEDS, 2), core.generate(core.model, SEEDS, 2)
    if cpu_supports_bf16():
        assert torch.equal(copied, autocast)
    else:
        assert (copied - autocast).abs().mean() < 0.01
    counts = core.meter.snapshot()["counts"]
    assert counts["student_forward"] == 2 * 2 * len(SEEDS) and counts["teacher_forward"] == 0


def test_replay_ahead_below_one_is_refused():
    with pytest.raises(UserError, match="replay-ahead"):
        SpeedOptions(replay_ahead=0)


def test_replay_ahead_trains_the_same_run_and_speed_settings_are_recorded_not_hashed(tmp_path, capsys):
    """A gr run drawing its replay 3 iterations ahead trains exactly as one drawing per iteration; the setting is
    recorded in the result, and a run directory accepts another speed setting as the same configuration."""
    from cldiff_bench.cli import main
    from cldiff_bench.io import read_json

    fast = ["run", "--strategy", "gr", "--stream", "digits-5", "--profile", "tiny", "--iterations", "4",
            "--precision", "fp32", "--no-eval", "--no-progress"]
    assert main([*fast, "--out", str(tmp_path / "plain")]) == 0
    assert main([*fast, "--out", str(tmp_path / "ahead"), "--replay-ahead", "3"]) == 0
    plain, ahead = (read_json(tmp_path / d / "digits-5/tiny/gr/seed0/result.json") for d in ("plain", "ahead"))
    assert ahead["config"]["speed"]["replay_ahead"] == 3 and plain["config"]["speed"]["replay_ahead"] == 1
    assert ahead["config_hash"] == plain["config_hash"]
    for p, a in zip(plain["tasks"], ahead["tasks"]):
        assert a["train"]["mean_losses"] == pytest.approx(p["train"]["mean_losses"], rel=1e-4)
        assert a["cost"]["counts"] == p["cost"]["counts"]  # no sample drawn that is not used
    capsys.readouterr()
    assert main([*fast, "--out", str(tmp_path / "plain"), "--replay-ahead", "2"]) == 0
    assert "skipped" in capsys.readouterr().err
