"""The output directories of runs and distillations: one configuration each, refused otherwise in their own words,
cleared of their own outputs, their checkpoints tied to the configuration."""
import json

import pytest

from cldiff_bench.distill.runner import DistillDir
from cldiff_bench.errors import UserError
from cldiff_bench.output_dir import CONFIG_NAME, config_hash
from cldiff_bench.rundir import RunDir

CONFIG = {"strategy": "naive", "seed": 0, "speed": {"threads": 1}}
OTHER = {**CONFIG, "seed": 1}


@pytest.mark.parametrize("kind,holds,nothing", [
    (RunDir, "a run", "no cldiff-bench run"),
    (DistillDir, "a distillation", "no distillation"),
])
def test_a_directory_continues_only_its_own_configuration_and_says_what_it_holds(tmp_path, kind, holds, nothing):
    out = kind(tmp_path / "out")
    assert out.prepare(CONFIG, force=False, resume=False) is False
    assert json.loads((out.path / CONFIG_NAME).read_text()) == {"config_hash": config_hash(CONFIG), "config": CONFIG}
    with pytest.raises(UserError, match=f"holds {holds} (with|of) another configuration "
                                        f"\\({config_hash(CONFIG)} != {config_hash(OTHER)}\\)"):
        out.prepare(OTHER, force=False, resume=False)
    # the speed settings are not part of the identity: the same work at another speed continues here
    out = kind(out.path)
    assert out.prepare({**CONFIG, "speed": {"threads": 4}}, force=False, resume=False) is False

    out.write_checkpoint({"position": 3})
    with pytest.raises(UserError, match=f"holds an unfinished {holds[2:]} of this configuration; continue it"):
        out.prepare(CONFIG, force=False, resume=False)
    assert out.prepare(CONFIG, force=False, resume=True) is False
    assert out.read_checkpoint()["position"] == 3
    other = kind(out.path)
    other.config_digest = config_hash(OTHER)
    with pytest.raises(UserError, match="it has config_hash"):
        other.read_checkpoint()

    out.result_path.write_text("{}")
    assert out.prepare(CONFIG, force=False, resume=False) is True

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=f"is not empty and holds {nothing}; use --force"):
        kind(foreign).prepare(CONFIG, force=False, resume=False)


@pytest.mark.parametrize("kind,outputs", [
    (RunDir, ["result.json", "checkpoint.pt", "models", "samples", "losses.csv"]),
    (DistillDir, ["distill.json", "checkpoint.pt", "models", "model.pt"]),
])
def test_force_clears_the_directorys_own_outputs_and_nothing_else(tmp_path, kind, outputs):
    out = kind(tmp_path)
    out.prepare(CONFIG, force=False, resume=False)
    for name in outputs:
        if "." in name:
            (tmp_path / name).write_text("x")
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "kept.pt").write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    assert out.prepare(OTHER, force=True, resume=False) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_NAME, "notes.txt"]
    assert out.config_digest == config_hash(OTHER)


def test_a_run_checkpoint_is_tied_to_the_strategy_as_well(tmp_path):
    out = RunDir(tmp_path)
    out.prepare(CONFIG, force=False, resume=False)
    out.write_checkpoint({"strategy": "gr", "model_preset": "tiny"})
    assert out.read_checkpoint(strategy="gr", model_preset="tiny")["config_hash"] == config_hash(CONFIG)
    with pytest.raises(UserError, match="it has strategy 'gr', this run has 'gd'"):
        out.read_checkpoint(strategy="gd", model_preset="tiny")
