"""One spelling per flag across commands, lists that refuse typos, and budgets that follow the profile."""
import pickle

import pytest

from cldiff_bench.cli import main
from cldiff_bench.errors import UserError
from cldiff_bench.io import load_tensors
from cldiff_bench.profiles import PROFILES
from cldiff_bench.registry import load_registry
from tests.helpers import one_line_error


@pytest.mark.parametrize("argv", [
    ["leaderboard", "results", "-o", "board"],
    ["leaderboard", "results", "--output", "board"],
    ["evaluate", "runs/x", "--output", "r.json"],
    ["score", "m.pt", "--stream", "digits-5", "--task", "0", "--output", "s.json"],
    ["import-unet", "unet", "-o", "m.pt"],
    ["distill", "m.pt", "--method", "pd", "--stream", "digits-5", "--task", "0", "-o", "d"],
    ["oracle", "--stream", "digits-5", "-o", "out"],
    ["run", "--strategy", "gd", "--stream", "digits-5", "--output", "out"],
])
def test_retired_output_spellings_are_refused_naming_out(capsys, argv):
    one_line_error(capsys, main(argv), "--out")


def test_minus_o_still_means_a_strategy_option_in_run(tmp_path, capsys):
    code = main(["run", "--strategy", "gd", "--stream", "digits-5", "--profile", "tiny", "--out", str(tmp_path),
                 "-o", "no_such_option", "1"])
    one_line_error(capsys, code, "takes no option")


@pytest.mark.parametrize("seeds, needle", [("0,,1", "empty"), ("0,1,", "empty"), ("1,1", "twice"),
                                           ("0,x", "integers"), ("-1", ">= 0")])
def test_a_bad_seed_list_is_a_one_line_error(capsys, seeds, needle):
    one_line_error(capsys, main(["run", "--strategy", "gd", "--stream", "digits-5", "--seeds", seeds]), needle)


def test_a_sweep_refuses_empty_names_and_seeds(tmp_path, capsys):
    pytest.importorskip("submitit")
    base = ["sweep", "--streams", "digits-5", "--dry-run", "--out", str(tmp_path)]
    one_line_error(capsys, main([*base, "--strategies", "gd,,naive"]), "empty name")
    one_line_error(capsys, main([*base, "--strategies", "gd", "--seeds", "0,,2"]), "empty")


def test_the_accelerator_budget_follows_the_profile():
    gd = load_registry().strategy("gd")
    tiny = PROFILES["tiny"].option_defaults
    accelerated = gd.resolve_options("digits-5", {"teacher_accel": "pd"}, tiny)
    assert accelerated["teacher_accel_updates"] == 20
    assert gd.resolve_options("digits-5", {"teacher_accel": "pd", "teacher_accel_updates": 7}, tiny)[
        "teacher_accel_updates"] == 7
    # Without an accelerator nothing of it is recorded, at any profile: configurations stay as published.
    plain = gd.resolve_options("fmnist-5", {})
    assert gd.resolve_options("fmnist-5", {}, tiny) == plain and "teacher_accel_updates" not in plain
    assert gd.resolve_options("fmnist-5", {"teacher_accel": "pd"}, PROFILES["cpu"].option_defaults)[
        "teacher_accel_updates"] == 600


def test_a_file_that_is_not_a_model_is_one_line_without_torchs_advice(tmp_path):
    path = tmp_path / "pickled.pt"
    path.write_bytes(pickle.dumps(object, protocol=4))
    with pytest.raises(UserError) as info:
        load_tensors(path)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "weights_only=False" not in message and str(path) in message
