"""Teacher accelerators: progressive distillation's target, what a round learns, what an update costs, the distill
command's resume and bad input, and the teacher strategies' option teacher_accel."""
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from cldiff_bench.cli import main
from cldiff_bench.core import DiffusionCore
from cldiff_bench.diffusion import DDIMSampler, NoiseSchedule
from cldiff_bench.diffusion.parameterisation import output_for
from cldiff_bench.diffusion.seeding import derive_seeds
from cldiff_bench.distill import BUILTIN_METHODS, DistillOptions
from cldiff_bench.distill.engine import Distillation
from cldiff_bench.distill.objective import ddim_step, pd_target, step_grid, student_config
from cldiff_bench.errors import UserError
from cldiff_bench.model_source import save_model_file
from cldiff_bench.registry import load_registry
from cldiff_bench.strategy import build_strategy
from tests.helpers import MICRO_UNET, batch
from tests.test_leaderboard import make_result

SHAPE = (1, 16, 16)  # the cpu profile's image size, which the distill commands below use


def gaussian_denoiser(mu: float, s: float):
    """E[x0 | x_t] for x0 ~ N(mu, s^2 I): mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu)."""
    def x0(x_t, alpha_bar):
        a = alpha_bar.sqrt()
        return mu + a * s ** 2 / (alpha_bar * s ** 2 + 1 - alpha_bar) * (x_t - a * mu)
    return x0


def test_pd_target_makes_one_student_step_land_on_two_teacher_ddim_steps():
    """With the exact denoiser as teacher, the student whose x0 is x~ reproduces the teacher's two DDIM steps
    (float64), from the first step (alpha = 0) to the last (to the clean image)."""
    schedule = NoiseSchedule()
    schedule.alpha_bar = schedule.alpha_bar.double()  # the samplers' coefficients in float64 too
    teacher_sampler, student_sampler = DDIMSampler(schedule, 4, clip_x0=False), DDIMSampler(schedule, 2, clip_x0=False)
    assert teacher_sampler._ab_prev.dtype == torch.float64
    denoise = gaussian_denoiser(mu=0.2, s=0.6)
    z = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for i in range(2):  # student step i covers teacher steps 2i and 2i + 1
        ab = [teacher_sampler._ab_t[2 * i], teacher_sampler._ab_t[2 * i + 1]]
        z_mid, _ = teacher_sampler.step(denoise(z, ab[0]), 2 * i, z, prediction="x0")
        z_end, _ = teacher_sampler.step(denoise(z_mid, ab[1]), 2 * i + 1, z_mid, prediction="x0")
        ab_end = student_sampler._ab_prev[i]
        x_tilde = pd_target(z, z_end, ab[0], ab_end)
        # The student is a v model: the v that means x0 = x~ at z.
        eps = (z - ab[0].sqrt() * x_tilde) / (1 - ab[0]).sqrt()
        student_end, _ = student_sampler.step(output_for("v", x_tilde, eps, ab[0]), i, z, prediction="v")
        torch.testing.assert_close(student_end, z_end, atol=1e-10, rtol=1e-10)
        # The distillation's own teacher step is the sampler's (on grids whose steps divide 1000).
        t, grid_ab = step_grid(schedule, 4)
        ours = ddim_step(denoise(z, ab[0]), z, grid_ab[2 * i], grid_ab[2 * i + 1], "x0", clip_x0=False)
        torch.testing.assert_close(ours, z_mid, atol=1e-10, rtol=1e-10)
        assert t[2 * i].item() == teacher_sampler.timesteps[2 * i]
        z = z_end


def micro_engine(method: str, options: dict, teacher_prediction: str = "epsilon", seed: int = 1):
    """A distillation of a random micro U-Net (the teacher) into its v copy, on 16 x 16 images."""
    teacher_config = replace(MICRO_UNET, prediction=teacher_prediction)
    teacher_core = DiffusionCore(teacher_config, SHAPE, torch.device("cpu"), init_seed=seed)
    core = DiffusionCore(student_config(MICRO_UNET), SHAPE, torch.device("cpu"))
    core.model.load_state_dict(teacher_core.sampling_state_dict())
    opts = DistillOptions(method=method, **options)
    engine = Distillation(core, BUILTIN_METHODS[method], opts, teacher_config, core.model, keys=(0,))
    return engine, core, teacher_core


def test_one_pd_round_lowers_the_one_step_error_against_the_teachers_two_steps():
    engine, core, teacher_core = micro_engine("pd", dict(target_steps=1, from_steps=2, updates=25, batch_size=16,
                                                          learning_rate=2e-3, ema_decay=None))
    held_out = derive_seeds(32, 12345)  # noise the chains never start from
    teacher = teacher_core.frozen_copy()
    target = core.generate(teacher, held_out, 2)

    def one_step_error():
        student = core.frozen_copy(core.model.state_dict(), role="student")
        assert student.config.prediction == "v"
        return (core.generate(student, held_out, 1) - target).pow(2).mean().item()

    before = one_step_error()
    engine.run()
    after = one_step_error()
    assert after < 0.75 * before, (before, after)
    assert [r["student_steps"] for r in engine.records] == [1]


@pytest.mark.parametrize("method,counts", [
    # per image and update: PD two teacher evaluations and a student forward and backward; DSD two of its own, one
    # with a backward, and no teacher at all
    ("pd", {"teacher_forward": 2, "student_forward": 1, "student_backward": 1}),
    ("dsd", {"teacher_forward": 0, "student_forward": 2, "student_backward": 1}),
])
def test_network_evaluations_per_update_as_the_cost_meter_counts_them(method, counts):
    # A v teacher: DSD then starts with its self-taught rounds (no conversion round).
    engine, core, _ = micro_engine(method, dict(target_steps=2, from_steps=8, updates=5, batch_size=6),
                                   teacher_prediction="v")
    engine.begin_round()
    assert (engine.teacher is None) == (method == "dsd")
    before = core.meter.snapshot()["counts"]
    for _ in range(3):
        engine.step()
    after = core.meter.snapshot()["counts"]
    measured = {k: (after[k] - before[k]) / (3 * 6) for k in counts}
    assert measured == counts
    assert counts["teacher_forward"] + counts["student_forward"] == BUILTIN_METHODS[method].forwards_per_update


def test_dsd_converts_an_epsilon_teacher_first_at_two_evaluations_per_update():
    engine, core, _ = micro_engine("dsd", dict(target_steps=2, from_steps=8, updates=5, batch_size=6))
    assert [(r.teacher_steps, r.student_steps, r.self_taught) for r in engine.rounds] == [
        (8, 8, False), (8, 4, True), (4, 2, True)]
    engine.begin_round()
    before = core.meter.snapshot()["counts"]
    engine.step()
    after = core.meter.snapshot()["counts"]
    assert after["teacher_forward"] - before["teacher_forward"] == 6
    assert after["student_forward"] - before["student_forward"] == 6


def test_a_conversion_round_of_its_own_has_its_length_and_learning_rate():
    engine, core, _ = micro_engine("pd", dict(target_steps=2, from_steps=4, updates=2, batch_size=4,
                                              convert_updates=3, convert_learning_rate=5e-3))
    assert [(r.teacher_steps, r.student_steps) for r in engine.rounds] == [(4, 4), (4, 2)]
    engine.begin_round()
    assert engine.optimizer.param_groups[0]["lr"] == 5e-3
    before = core.meter.snapshot()["counts"]
    engine.step()
    after = core.meter.snapshot()["counts"]
    # one teacher step per student step: 1 teacher and 1 student evaluation per chain
    assert after["teacher_forward"] - before["teacher_forward"] == 4
    engine.run()
    assert [(r["teacher_steps"], r["student_steps"], r["updates"]) for r in engine.records] == [(4, 4, 3), (4, 2, 2)]
    # a v teacher needs no conversion: the option changes nothing then
    v_engine, _, _ = micro_engine("pd", dict(target_steps=2, from_steps=4, convert_updates=3), teacher_prediction="v")
    assert [(r.teacher_steps, r.student_steps) for r in v_engine.rounds] == [(4, 2)]
    # dsd's own conversion round takes the option's length
    dsd, _, _ = micro_engine("dsd", dict(target_steps=2, from_steps=4, updates=2, convert_updates=7))
    assert [dsd.options.updates_in(r) for r in dsd.rounds] == [7, 2]
    # unset, the options record as before (configurations and their hashes unchanged)
    assert "convert_updates" not in DistillOptions(method="pd", target_steps=1).to_dict()
    with pytest.raises(UserError, match="--convert-updates must be a whole number"):
        DistillOptions(method="pd", target_steps=1, convert_updates=0)


def model_file(tmp_path, seed: int = 1):
    core = DiffusionCore(MICRO_UNET, SHAPE, torch.device("cpu"), init_seed=seed)
    path = tmp_path / "teacher.pt"
    save_model_file(path, MICRO_UNET, core.model.state_dict())
    return path, core


def distill_args(model, out, *extra):
    return ["distill", str(model), "--method", "pd", "--stream", "digits-5", "--task", "0", "--profile", "cpu",
            "--out", str(out), "--no-progress", *extra]


@pytest.mark.parametrize("extra,message", [
    (["--target-steps", "3"], "--from-steps must be --target-steps (3) times a power of two"),
    (["--target-steps", "128", "--from-steps", "64"], "must be smaller than the teacher's steps"),
    (["--from-steps", "24"], "--from-steps must be --target-steps (1) times a power of two"),
    (["--method", "nope"], "unknown distillation method 'nope'"),
    (["--learning-rate", "-1"], "--learning-rate must be positive"),
])
def test_bad_distill_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    model, _ = model_file(tmp_path)
    assert main(distill_args(model, tmp_path / "out", "--no-eval", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_a_model_of_another_architecture_is_refused(tmp_path, capsys):
    _, core = model_file(tmp_path)
    bare = tmp_path / "task0.pt"  # a run's models/taskK.pt: a bare state dict of the --model-preset
    torch.save(core.model.state_dict(), bare)
    assert main(distill_args(bare, tmp_path / "out", "--no-eval", "--model-preset", "tiny")) == 2
    err = capsys.readouterr().err
    assert "another architecture" in err and err.count("\n") == 1, err


def test_distill_writes_a_v_model_per_round_that_records_how_it_is_sampled(tmp_path):
    model, _ = model_file(tmp_path)
    out = tmp_path / "out"
    assert main(distill_args(model, out, "--no-eval", "--from-steps", "4", "--target-steps", "1", "--updates", "2",
                             "--batch-size", "4", "--threads", "1")) == 0
    result = json.loads((out / "distill.json").read_text())
    assert [(r["teacher_steps"], r["student_steps"]) for r in result["rounds"]] == [(4, 2), (2, 1)]
    assert result["config"]["options"] == {"method": "pd", "target_steps": 1, "from_steps": 4, "updates": 2,
                                           "batch_size": 4, "learning_rate": 1e-4, "ema_decay": 0.995}
    assert result["cost"]["updates"] == 4 and result["cost"]["forwards_per_update_per_image"] == 3
    counts = result["cost"]["counts"]
    # 4 updates of 4 chains: 2 teacher and 1 student evaluations each, plus the chains' spread at the start of
    # round 4 -> 2 (two of them 2 teacher steps along; round 2 -> 1 has one student step: all start at noise)
    assert counts["student_forward"] == counts["student_backward"] == 16
    assert counts["teacher_forward"] == 32 + 2 * 2
    assert result["cost"]["seconds"]["teacher_distillation"] > 0
    doc = torch.load(out / "model.pt", weights_only=True)
    assert doc["unet_config"]["prediction"] == "v" and doc["sampling"] == {"sampler": "ddim", "steps": 1}
    assert torch.load(out / "models/steps2.pt", weights_only=True)["sampling"]["steps"] == 2
    assert not (out / "checkpoint.pt").exists()
    # The same command again finds its result; another configuration in the same directory is refused.
    assert main(distill_args(model, out, "--no-eval", "--from-steps", "4", "--target-steps", "1", "--updates", "2",
                             "--batch-size", "4")) == 0
    assert main(distill_args(model, out, "--no-eval", "--from-steps", "4", "--target-steps", "2")) == 2


@pytest.mark.slow  # two subprocesses and a reference distillation
@pytest.mark.parametrize("variant", [
    [],
    # the DSD variants: images drawn by keyed seeds instead of chains (from a pool of the model's samples, drawn
    # again on resume and counted once), a learning rate that moves every update
    ["--method", "dsd-anchored", "--anchor-weight", "0.5", "--lr-schedule", "cosine", "--warmup-fraction", "0.1",
     "--weight-decay", "5e-4", "--anchor", "samples", "--anchor-images", "32"],
], ids=["pd", "dsd-anchored-samples-cosine"])
def test_killed_distillation_resumes_to_the_same_result(tmp_path, variant):
    model, _ = model_file(tmp_path)
    args = ["--no-eval", "--from-steps", "4", "--target-steps", "1", "--updates", "40", "--batch-size", "8",
            "--checkpoint-every", "2", "--threads", "1", *variant]
    reference = tmp_path / "reference"
    assert main(distill_args(model, reference, *args)) == 0

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cldiff_bench.cli", *distill_args(model, out, *args)]
    for position in ((0, 4), (1, 4)):  # early in round 0, then early in round 1: most of the round still to do
        proc = subprocess.Popen(cmd + (["--resume"] if (out / "checkpoint.pt").exists() else []), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                state = torch.load(out / "checkpoint.pt", weights_only=True)["engine"]
            except Exception:
                state = None  # not there yet, or being replaced
            if state and (state["round"], state["update"]) >= position:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the distillation finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "distill.json").exists()
    assert main(distill_args(model, out, *args, "--resume")) == 0

    def stripped(path):
        doc = json.loads(path.read_text())
        for r in doc["rounds"]:
            r["cost"].pop("seconds")
        return doc["rounds"], doc["cost"]["counts"]

    assert stripped(out / "distill.json") == stripped(reference / "distill.json")
    ours = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    theirs = torch.load(reference / "model.pt", weights_only=True)["state_dict"]
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


# --- teacher_accel inside continual learning -------------------------------------------------------------------------

def gd_with(options: dict, core=None):
    registry = load_registry()
    cls = registry.strategy("gd")
    core = core or DiffusionCore(MICRO_UNET, (1, 32, 32), torch.device("cpu"))
    return build_strategy(cls, core, cls.resolve_options("digits-5", options), registry), core


def test_teacher_accel_is_recorded_only_when_used():
    cls = load_registry().strategy("gd")
    plain = cls.resolve_options("digits-5", {})
    assert plain == {"lambda": 0.75, "teacher_steps": 2, "teacher_eta": 0.0}  # as before: hashes unchanged
    assert cls.resolve_options("digits-5", {"teacher_accel": "none"}) == plain
    # A name is checked against the run's registry.
    with pytest.raises(UserError, match=r"unknown teacher accelerator \(option teacher_accel\) 'fast'.*"
                                        r"Known: dsd, dsd-anchored, none, pd$"):
        gd_with({"teacher_accel": "fast"})
    # The anchor's settings are a method's that learns from images: recorded for it only, refused for another.
    registry = load_registry()
    for name in ("pd", "dsd"):
        assert cls.registered_options(cls.resolve_options("digits-5", {"teacher_accel": name}), registry) == {
            **plain, "teacher_accel": name, "teacher_accel_from": 4, "teacher_accel_updates": 600,
            "teacher_accel_convert_updates": 0, "teacher_accel_learning_rate": 1e-3}
    anchored = cls.registered_options(cls.resolve_options("digits-5", {"teacher_accel": "dsd-anchored"}), registry)
    assert (anchored["teacher_accel_anchor_weight"], anchored["teacher_accel_anchor_images"]) == (0.15, 1024)
    with pytest.raises(UserError, match="^option teacher_accel_anchor_weight sets the images of a teacher accelerator "
                                        "that learns from them .dsd-anchored.; teacher_accel pd learns from none$"):
        gd_with({"teacher_accel": "pd", "teacher_accel_anchor_weight": 0.5})
    with pytest.raises(UserError, match="teacher_accel_anchor_weight must lie in"):
        gd_with({"teacher_accel": "dsd-anchored", "teacher_accel_anchor_weight": 1.5})
    with pytest.raises(UserError, match="power of two"):
        gd_with({"teacher_accel": "pd", "teacher_steps": 3})
    with pytest.raises(UserError, match="teacher_eta must be 0"):
        gd_with({"teacher_accel": "dsd", "teacher_eta": 0.5})
    with pytest.raises(UserError, match="teacher_accel_learning_rate must be positive"):
        gd_with({"teacher_accel": "pd", "teacher_accel_learning_rate": 0})


def test_an_accelerated_run_is_a_variant_with_its_own_directory_and_board_row(tmp_path):
    from cldiff_bench.context import RunContext
    from cldiff_bench.leaderboard.aggregate import LoadedResult, build_tables
    from cldiff_bench.settings import RunConfig, resolve_settings

    def settings(**options):
        return resolve_settings(RunConfig(strategy="gd", stream="digits-5", profile="tiny", device="cpu",
                                          out=tmp_path, strategy_options=options), load_registry())

    plain, accelerated = settings(), settings(teacher_accel="pd")
    assert plain.run_dir == tmp_path / "digits-5" / "tiny" / "gd" / "seed0"
    assert accelerated.run_dir == tmp_path / "digits-5" / "tiny" / "gd+pd" / "seed0"
    registry = load_registry()
    assert "variant" not in RunContext.build(plain, registry).resolved_config()  # plain runs keep their configuration
    assert RunContext.build(accelerated, registry).resolved_config()["variant"] == "gd+pd"

    runs = [make_result("gd", s, {"fid": 10.0 + s}) for s in (0, 1)]
    for seed in (0, 1):
        doc = make_result("gd", seed, {"fid": 8.0 + seed})
        doc["config"]["strategy_options"] = {"teacher_accel": "pd"}
        doc["config"]["variant"] = "gd+pd"
        runs.append(doc)
    (table,) = build_tables([LoadedResult(f"{i}.json", doc) for i, doc in enumerate(runs)])
    rows = {r.name: r for r in table.rows}
    assert sorted(rows) == ["gd", "gd+pd"]
    assert rows["gd+pd"].final["fid"][0] == 8.5 and rows["gd"].final["fid"][0] == 10.5
    # Seeds of one row that differ in the accelerator (a result not named as a variant) are still refused.
    runs[3]["config"].pop("variant")
    with pytest.raises(UserError, match="strategy_options"):
        build_tables([LoadedResult(f"{i}.json", doc) for i, doc in enumerate(runs[:1] + runs[3:])])


ANCHOR_POOL = 6  # dsd-anchored's pool of teacher samples in the test below (4 steps each)


@pytest.mark.parametrize("method", ["pd", "dsd", "dsd-anchored"])
def test_gd_replays_from_the_distilled_teacher_and_counts_its_cost(method):
    anchor = {"teacher_accel_anchor_images": ANCHOR_POOL} if method == "dsd-anchored" else {}
    strategy, core = gd_with({"teacher_accel": method, "teacher_accel_from": 4, "teacher_accel_updates": 2, **anchor})
    strategy.begin_task(1)
    assert strategy.replay_teacher is None  # made before the first replay, not before it is needed
    before = core.meter.snapshot()
    first = strategy.batch_loss(batch(1, 0))
    after = core.meter.snapshot()
    assert strategy.replay_teacher.config.prediction == "v"
    assert after["seconds"]["teacher_distillation"] > 0
    # 4 images: 2-step replay (8) and gd's target (4) from the teacher; the distillation, all charged to the
    # teacher: PD 2 updates x 3 evaluations x 4 chains + 4 to spread the chains; DSD a conversion round 4 -> 4
    # (2 x 2 x 4, spread 1 + 2 + 3) and a round 4 -> 2 (2 x 2 x 4, spread 2 + 2); the anchored DSD first draws
    # its pool (6 samples x 4 steps), then the same conversion round and a round 4 -> 2 on the pool's images
    # (2 x 2 x 4, no chains to spread)
    distilled = {"pd": 2 * 3 * 4 + 4, "dsd": 2 * 2 * 4 + 6 + 2 * 2 * 4 + 4,
                 "dsd-anchored": ANCHOR_POOL * 4 + 2 * 2 * 4 + 6 + 2 * 2 * 4}[method]
    assert after["counts"]["teacher_forward"] - before["counts"]["teacher_forward"] == 8 + 4 + distilled
    assert after["counts"]["student_forward"] - before["counts"]["student_forward"] == 8
    # Resumed mid-task, the distilled teacher comes back from the state: no second distillation, the same losses.
    resumed, _ = gd_with({"teacher_accel": method, "teacher_accel_from": 4, "teacher_accel_updates": 2, **anchor},
                         core)
    resumed.load_state_dict(strategy.state_dict())
    before = core.meter.snapshot()["counts"]["teacher_forward"]
    again = resumed.batch_loss(batch(1, 1))
    assert core.meter.snapshot()["counts"]["teacher_forward"] - before == 8 + 4
    assert torch.equal(again.total, strategy.batch_loss(batch(1, 1)).total)
    assert torch.isfinite(first.total)


@pytest.mark.slow  # trains the evaluation classifier
def test_distill_scores_are_what_score_says_of_its_model_and_of_plain_ddim(tmp_path, capsys):
    model, _ = model_file(tmp_path)
    out = tmp_path / "out"
    assert main(distill_args(model, out, "--from-steps", "2", "--target-steps", "1", "--updates", "2",
                             "--batch-size", "4", "--eval-steps", "1,2", "--num-generated", "40")) == 0
    scores = json.loads((out / "distill.json").read_text())["scores"]
    assert scores["2"]["distilled"] is None  # no 2-step student was made (one round, 2 -> 1)
    capsys.readouterr()

    def score(path, *extra):
        assert main(["score", str(path), "--stream", "digits-5", "--task", "0", "--profile", "cpu",
                     "--num-generated", "40", "--no-progress", *extra]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    # `score` reads the distilled model's prediction type (v), sampler and steps (1) from its file.
    distilled = score(out / "model.pt")
    assert distilled["fid"] == pytest.approx(scores["1"]["distilled"]["fid"], rel=1e-9)
    assert distilled["kld"] == pytest.approx(scores["1"]["distilled"]["kld"], rel=1e-9, abs=1e-12)
    for steps in ("1", "2"):
        plain = score(model, "--steps", steps)
        assert plain["fid"] == pytest.approx(scores[steps]["ddim"]["fid"], rel=1e-9)
    assert main(["score", str(out / "model.pt"), "--stream", "digits-5", "--task", "0", "--profile", "cpu",
                 "--sampler", "nope"]) == 2
    assert "unknown sampler 'nope'" in capsys.readouterr().err


def test_halving_reaches_cifar10s_ten_teacher_steps_from_twenty():
    from cldiff_bench.diffusion.ddim import trailing_timesteps
    from cldiff_bench.distill import halving_rounds
    assert [(r.teacher_steps, r.student_steps) for r in halving_rounds(40, 10)] == [(40, 20), (20, 10)]
    # a round's student steps land on every other point of its teacher's grid, for any even count
    for steps in (20, 12, 6):
        assert trailing_timesteps(steps // 2) == trailing_timesteps(steps)[::2]
    for bad in ((30, 10), (10, 10), (24, 0)):
        with pytest.raises(UserError):
            halving_rounds(*bad)
    from cldiff_bench.registry import load_registry
    assert load_registry().strategy("gd").resolve_options("cifar10-5", {"teacher_accel": "pd"})[
        "teacher_accel_from"] == 20
