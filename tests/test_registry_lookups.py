"""A run looks up what it names in the registry it was given, `--plugin` modules included: a plugin's distillation
method accelerates a teacher, a plugin's sampler draws a run's metric samples and `score`'s, and an unknown name is
refused with the registered ones before any training."""
import json

import pytest
import torch

from cldiff_bench.cli import main
from cldiff_bench.context import RunContext
from cldiff_bench.core import DiffusionCore
from cldiff_bench.errors import UserError
from cldiff_bench.model_source import save_model_file
from cldiff_bench.registry import load_registry
from cldiff_bench.settings import RunConfig, resolve_settings
from tests.helpers import MICRO_UNET, one_line_error
from tests.plugins import ancestral_sampler_plugin, halving_plugin

HALVING = "tests.plugins.halving_plugin"
ANCESTRAL = "tests.plugins.ancestral_sampler_plugin"
GD = ["run", "--strategy", "gd", "--stream", "digits-5", "--profile", "tiny", "--iterations", "2", "--no-eval",
      "--no-progress"]


def test_a_plugins_distillation_method_accelerates_the_teacher(tmp_path, capsys):
    halving_plugin.UPDATES.clear()
    code = main(["--plugin", HALVING, *GD, "--out", str(tmp_path), "--teacher-accel", "halving",
                 "-o", "teacher_accel_updates", "3"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "digits-5/tiny/gd+halving/seed0/result.json").read_text())
    assert result["config"]["variant"] == "gd+halving"
    assert result["config"]["strategy_options"]["teacher_accel"] == "halving"
    # Tasks 1 to 4 each distil their teacher once: one round from 4 steps to gd's 2, of 3 updates.
    assert halving_plugin.UPDATES == [(4, 2)] * 3 * 4
    assert all(t["cost"]["seconds"]["teacher_distillation"] > 0 for t in result["tasks"][1:])


@pytest.mark.parametrize("plugins, name, needles", [
    ([HALVING], "halvng", ["'halvng'", "Did you mean 'halving'?", "Known: dsd, dsd-anchored, halving, none, pd"]),
    ([], "halving", ["'halving'", "Known: dsd, dsd-anchored, none, pd"]),  # only the plugin registers it
])
def test_a_teacher_accelerator_the_registry_lacks_is_refused_before_training(plugins, name, needles, tmp_path,
                                                                             capsys):
    args = [a for p in plugins for a in ("--plugin", p)]
    code = main([*args, *GD, "--out", str(tmp_path), "-o", "teacher_accel", name])
    one_line_error(capsys, code, "teacher_accel", *needles)
    assert not (tmp_path / "digits-5").exists()  # refused before the run directory was made


@pytest.mark.slow  # a whole evaluated run
def test_a_plugins_sampler_draws_a_runs_metric_samples(tmp_path, capsys):
    drawn = ancestral_sampler_plugin.DRAWN[0]
    code = main(["--plugin", ANCESTRAL, "run", "--strategy", "gd", "--stream", "digits-5", "--profile", "tiny",
                 "--iterations", "2", "--sampler", "ancestral", "--num-generated", "40", "--no-progress", "--out",
                 str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "digits-5/tiny/gd/seed0/result.json").read_text())
    assert result["config"]["evaluation"]["sampler"] == "ancestral"
    assert result["evaluation"]["settings"]["sampler"] == "ancestral"
    # Every image the evaluation drew came from it: the metric samples, the sample grid and the solver's replay
    # (gd's solver replays from the model after the previous task). gd's own replay is the teacher's (ddim).
    evaluation_images = sum(t["cost"]["counts"]["evaluation_images_generated"] for t in result["tasks"])
    assert ancestral_sampler_plugin.DRAWN[0] - drawn == evaluation_images > 5 * (40 + 16)


def test_the_default_sampler_keeps_the_configuration_and_an_unknown_one_is_refused(tmp_path):
    registry = load_registry([ANCESTRAL])

    def configuration(**evaluation):
        settings = resolve_settings(RunConfig(strategy="naive", stream="digits-5", profile="tiny", device="cpu",
                                              out=tmp_path, evaluation=evaluation), registry)
        return RunContext.build(settings, registry).resolved_config()

    plain = configuration()
    assert "sampler" not in plain["evaluation"]
    assert configuration(sampler="ddim") == plain  # named or not, the default is one configuration (one hash)
    assert configuration(sampler="dpmpp-2m")["evaluation"] == {**plain["evaluation"], "sampler": "dpmpp-2m"}
    with pytest.raises(UserError, match=r"unknown sampler 'ancestrl'\. Did you mean 'ancestral'\? "
                                        r"Known: ancestral, ddim, dpmpp-2m$"):
        configuration(sampler="ancestrl")


def test_score_draws_with_a_plugins_sampler(tmp_path, capsys):
    model = tmp_path / "model.pt"
    save_model_file(model, MICRO_UNET, DiffusionCore(MICRO_UNET, (1, 32, 32), torch.device("cpu")).model.state_dict())
    score = ["score", str(model), "--stream", "digits-5", "--task", "0", "--profile", "tiny", "--num-generated", "8",
             "--no-progress", "--sampler", "ancestral"]
    drawn = ancestral_sampler_plugin.DRAWN[0]
    assert main(["--plugin", ANCESTRAL, *score, "--out", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["sampling"]["sampler"] == scores["evaluation"]["settings"]["sampler"] == "ancestral"
    assert ancestral_sampler_plugin.DRAWN[0] - drawn == 8
    capsys.readouterr()
    one_line_error(capsys, main(score), "unknown sampler 'ancestral'", "Known: ddim, dpmpp-2m")
