"""The run arguments, declared once (run_arguments.py): each reaches the configuration field it names, a plugin adds
a subcommand, and the commands are the registry's."""
import dataclasses

import pytest

from cldiff_bench.cli import build_parser, main
from cldiff_bench.evaluation import EvalSettings
from cldiff_bench.registry import load_registry
from cldiff_bench.run_arguments import BUDGET, CONFIG, EVALUATION, RUN_ARGUMENTS, run_config_from_args
from cldiff_bench.settings import Budget, RunConfig, resolve_settings

COMMAND_PLUGIN = "tests.plugins.command_plugin"
# A value of each budget argument other than the tiny profile's (a new budget argument needs one here).
BUDGET_VALUES = {"model": ("small", "small"), "epochs": ("2", 2.0), "iterations": ("3", 3), "batch_size": ("8", 8),
                 "learning_rate": ("5e-4", 5e-4), "lr_schedule": ("cosine", "cosine"),
                 "warmup_iterations": ("2", 2), "ema_decay": ("0.9", 0.9), "image_size": ("16", 16)}


def test_every_argument_names_a_field_that_exists():
    fields = {CONFIG: {f.name for f in dataclasses.fields(RunConfig)},
              BUDGET: {f.name for f in dataclasses.fields(Budget)},
              EVALUATION: {f.name for f in dataclasses.fields(EvalSettings)}}
    for argument in RUN_ARGUMENTS:
        if argument.into in fields:
            assert argument.target in fields[argument.into], argument.flag
    assert {a.target for a in RUN_ARGUMENTS if a.into == BUDGET} == set(BUDGET_VALUES)


@pytest.mark.parametrize("key", sorted(BUDGET_VALUES))
def test_a_budget_argument_on_the_command_line_reaches_the_runs_budget(key, tmp_path):
    given, expected = BUDGET_VALUES[key]
    registry = load_registry()
    args = build_parser(registry).parse_args(["run", "--strategy", "naive", "--stream", "digits-5", "--profile",
                                              "tiny", f"--{key.replace('_', '-')}", given, "--out", str(tmp_path)])
    cfg = run_config_from_args(args, args.strategy, args.stream, 0, args.profile)
    assert cfg.budget == {key: expected}
    budget = resolve_settings(dataclasses.replace(cfg, device="cpu"), registry).budget
    assert getattr(budget, key) == expected
    if key == "epochs":
        assert budget.iterations is None  # --epochs replaces the profile's fixed iteration count


def test_strategy_options_from_flags_and_pairs_and_a_repeat_refused(tmp_path):
    parser = build_parser(load_registry())
    args = parser.parse_args(["run", "--strategy", "gd", "--stream", "digits-5", "--lambda", "0.5", "-o",
                              "teacher-steps", "3", "--ruler", "r.pt", "--no-eval", "--log", "tensorboard"])
    cfg = run_config_from_args(args, "gd", "digits-5", 1, "tiny")
    assert cfg.strategy_options == {"teacher_steps": "3", "lambda": 0.5}
    assert cfg.evaluation == {"ruler_file": "r.pt"} and not cfg.evaluate and cfg.tensorboard and cfg.seed == 1


def test_a_plugin_adds_a_subcommand_that_gets_the_runs_registry(capsys):
    assert main(["--plugin", COMMAND_PLUGIN, "--plugin", "tests.plugins.replay_buffer_plugin", "names",
                 "strategy"]) == 0
    names = capsys.readouterr().out.split()
    assert "gd" in names and "buffer-replay" in names
    assert main(["--plugin", COMMAND_PLUGIN, "names", "colours"]) == 2
    assert "no kind 'colours'" in capsys.readouterr().err
    assert main(["names", "strategy"]) == 2  # without the plugin there is no such command
    assert main(["--plugin", COMMAND_PLUGIN, "list"]) == 0
    assert any(line.startswith("names ") and f"--plugin {COMMAND_PLUGIN}" in line
               for line in capsys.readouterr().out.splitlines())


def test_a_switch_not_given_is_false_as_the_configuration_records_it(tmp_path):
    """An unset switch must read False, not None: the speed block is recorded, and boards refuse seeds whose
    recorded speed settings differ (a None once split a table's seeds)."""
    args = build_parser(load_registry()).parse_args(["run", "--strategy", "naive", "--stream", "digits-5"])
    cfg = run_config_from_args(args, "naive", "digits-5", 0, "tiny")
    assert cfg.compile is False and cfg.resume is False and cfg.force is False
    assert cfg.progress is True and cfg.evaluate is True and cfg.tensorboard is False
