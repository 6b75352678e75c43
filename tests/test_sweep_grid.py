"""`cldiff-bench sweep`'s grid: the command line and TOML files into cells (checked with --dry-run, which plans and
runs nothing), and every bad input as one line with exit status 2."""
import json
import re
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("submitit")

from cldiff_bench.cli import main  # noqa: E402
from tests.helpers import one_line_error  # noqa: E402


def dry_run(capsys, *args) -> list[list[str]]:
    """(cell, plan, command) rows of a dry run."""
    capsys.readouterr()
    assert main(["sweep", *args, "--dry-run"]) == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    return [re.split(r"\s{2,}", line, maxsplit=2) for line in lines[2:-1]]


def test_a_command_line_grid_is_seeds_outer_strategies_inner_in_the_order_given(tmp_path, capsys):
    out = tmp_path / "runs"
    rows = dry_run(capsys, "--strategies", "gd,gr", "--streams", "digits-5", "--seeds", "1,0", "--profile", "tiny",
                   "--out", str(out), "--iterations", "3", "--lambda", "0.5", "-o", "teacher_steps", "4")
    assert [r[0] for r in rows] == ["digits-5/tiny/gd/seed1", "digits-5/tiny/gr/seed1", "digits-5/tiny/gd/seed0",
                                    "digits-5/tiny/gr/seed0"]
    assert all(r[1] == "submitted" for r in rows)
    assert rows[0][2] == (f"cldiff-bench run --strategy gd --stream digits-5 --seed 1 --profile tiny --out {out} "
                          f"--option teacher_steps 4 --lambda 0.5 --iterations 3 --resume --no-progress")
    assert not (out / "sweeps").exists()  # a dry run writes no manifest


def test_a_grid_file_holds_blocks_defaults_and_the_command_line_wins(tmp_path, capsys):
    grid = tmp_path / "study.toml"
    grid.write_text(textwrap.dedent("""
        name = "study"
        [defaults]
        profile = "tiny"
        iterations = 5
        num-generated = 40
        [executor]
        kind = "local"
        parallel = 1
        [[grid]]
        name = "replay"
        strategies = ["gd", "gr"]
        streams = "digits-5"
        seeds = [0, 1]
        options = {lambda = 0.5}
        [[grid]]
        strategies = "naive"
        streams = ["digits-5"]
        no_eval = true
        out = "elsewhere"
    """))
    rows = dry_run(capsys, str(grid), "--iterations", "2", "--out", str(tmp_path / "runs"))
    keys = [r[0] for r in rows]
    assert keys == ["digits-5/tiny/gd/seed0", "digits-5/tiny/gr/seed0", "digits-5/tiny/gd/seed1",
                    "digits-5/tiny/gr/seed1", "digits-5/tiny/naive/seed0"]
    commands = {r[0]: r[2] for r in rows}
    assert "--option lambda 0.5" in commands["digits-5/tiny/gd/seed1"]
    assert "--iterations 2 " in commands["digits-5/tiny/gd/seed1"]  # the command line's, not the file's 5
    assert "--num-generated 40" in commands["digits-5/tiny/gr/seed0"]
    # The command line's --out applies to every block too.
    assert f"--out {tmp_path / 'runs'} " in commands["digits-5/tiny/naive/seed0"]
    assert "--no-eval" in commands["digits-5/tiny/naive/seed0"] and "--no-eval" not in commands[keys[0]]


def test_a_run_directory_holding_the_result_of_the_same_configuration_is_skipped(tmp_path, capsys):
    """The sweep's identity of a cell is the run's: a finished run is recognised without running anything."""
    out = tmp_path / "runs"
    run = ["--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--iterations", "1", "--no-eval",
           "--out", str(out), "--no-progress"]
    assert main(["run", *run, "--seed", "0"]) == 0
    rows = dry_run(capsys, "--strategies", "naive", "--streams", "digits-5", "--seeds", "0,1", "--profile", "tiny",
                   "--iterations", "1", "--no-eval", "--out", str(out))
    assert [r[:2] for r in rows] == [["digits-5/tiny/naive/seed0", "skipped: done"],
                                     ["digits-5/tiny/naive/seed1", "submitted"]]
    # Another configuration in the same run directory is refused, naming the block, as `run` refuses it.
    code = main(["sweep", "--strategies", "naive", "--streams", "digits-5", "--profile", "tiny", "--iterations", "2",
                 "--no-eval", "--out", str(out), "--dry-run"])
    one_line_error(capsys, code, "the command line", "holds a run of another configuration")


@pytest.mark.parametrize("body, needles", [
    ('[[grid]]\nstrategies = ["naive"]\nstreams = ["digits-5"]\n[[grid]]\nname = "b"\nstrategies = ["naive", "gdd"]\n'
     'streams = ["digits-5"]\n', ["[[grid]] 2 (b)", "unknown strategy 'gdd'", "Did you mean 'gd'"]),
    ('[[grid]]\nstrategies = ["naive"]\nstreams = ["digits-6"]\n', ["[[grid]] 1", "unknown stream 'digits-6'"]),
    ('[[grid]]\nstrategies = ["naive"\nstreams = ["digits-5"]\n', ["not valid TOML"]),
    ('[[grid]]\nstrategies = ["naive"]\nstreams = ["digits-5"]\niteration = 3\n',
     ["[[grid]] 1", "unknown key 'iteration'", "did you mean 'iterations'"]),
    ('[[grid]]\nstrategies = ["naive"]\nstreams = ["digits-5"]\niterations = "many"\n', ["[[grid]] 1", "iterations"]),
    ('[[grid]]\nstrategies = ["naive"]\nstreams = ["digits-5"]\nseeds = [0, -1]\n', ["seeds must be non-negative"]),
    ('[[grid]]\nstrategies = []\nstreams = ["digits-5"]\n', ["[[grid]] 1", "no cells"]),
    ('name = "no blocks"\n', ["no [[grid]] blocks", "no cells"]),
    ('[[grid]]\nstrategies = ["naive"]\nstreams = ["digits-5"]\n[executor]\nkind = "slurm"\npartitions = "gpu"\n',
     ["unknown [executor] key 'partitions'"]),
    ('[[grid]]\nstrategies = ["naive"]\nstreams = ["digits-5"]\n[executor]\ntime = "forever"\n', ["time must be"]),
    ('[[grid]]\nstrategies = ["gd"]\nstreams = ["digits-5"]\noptions = {lambda = -1}\n', ["[[grid]] 1", "lambda"]),
])
def test_a_bad_grid_file_is_one_line_naming_its_block(tmp_path, capsys, body, needles):
    grid = tmp_path / "grid.toml"
    grid.write_text(body)
    out = tmp_path / "runs"
    code = main(["sweep", str(grid), "--out", str(out), "--profile", "tiny"])
    one_line_error(capsys, code, *needles)
    assert not (out / "sweeps").exists()


@pytest.mark.parametrize("args, needles", [
    (["--strategies", "naive,gdd", "--streams", "digits-5"], ["the command line", "unknown strategy 'gdd'"]),
    (["--strategies", "naive", "--streams", "fmnist-55"], ["the command line", "unknown stream 'fmnist-55'"]),
    (["--strategies", "", "--streams", "digits-5"], ["strategies is empty", "no cells"]),
    (["--streams", "digits-5"], ["no grid"]),
    (["--strategies", "naive", "--streams", "digits-5", "--seeds", "0,x"], ["seeds must be"]),
    (["--strategies", "naive", "--streams", "digits-5", "--force"], ["unrecognized arguments: --force"]),
    (["--strategies", "naive", "--streams", "digits-5", "--iterations", "0"], ["--iterations must be positive"]),
    (["a.toml", "b.toml"], ["one grid file"]),
    (["status"], ["usage: cldiff-bench sweep status"]),
])
def test_a_bad_command_line_grid_is_one_line(tmp_path, capsys, args, needles):
    code = main(["sweep", *args, "--out", str(tmp_path / "runs"), "--profile", "tiny"])
    one_line_error(capsys, code, *needles)


def test_status_of_a_folder_that_is_no_sweep_is_one_line(tmp_path, capsys):
    one_line_error(capsys, main(["sweep", "status", str(tmp_path)]), "holds no sweep manifest")
    one_line_error(capsys, main(["sweep", "status", str(tmp_path / "missing")]), "does not exist")
    one_line_error(capsys, main(["sweep", "status", str(tmp_path), "--strategies", "gd"]), "takes only")


def test_without_submitit_the_sweep_names_the_extra_and_the_rest_does_not_need_it(tmp_path):
    """submitit is the `cluster` extra: importing the command line or running anything else does not load it."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["submitit"] = None  # as if not installed
        from cldiff_bench.cli import main
        assert "submitit" not in [m for m in sys.modules if sys.modules[m] is not None]
        assert main(["list"]) == 0
        sys.exit(main(["sweep", "--strategies", "naive", "--streams", "digits-5", "--out", {str(tmp_path)!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1 and "cldiff-bench[cluster]" in err and "submitit" in err, err


def test_the_manifest_records_the_grid_the_cells_and_the_command(tmp_path, capsys):
    """A sweep with nothing to run still records itself (and runs nothing)."""
    out = tmp_path / "runs"
    assert main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--iterations", "1",
                 "--no-eval", "--out", str(out), "--no-progress"]) == 0
    assert main(["sweep", "--strategies", "naive", "--streams", "digits-5", "--profile", "tiny", "--iterations", "1",
                 "--no-eval", "--out", str(out), "--executor", "debug", "--no-progress"]) == 0
    manifest = json.loads((out / "sweeps/sweep/manifest.json").read_text())
    assert manifest["grid"] == [{"block": "the command line", "name": None, "strategies": ["naive"],
                                 "streams": ["digits-5"], "seeds": [0], "profiles": ["tiny"],
                                 "cell_options": ["--out", str(out), "--iterations", "1", "--no-eval"]}]
    cell = manifest["cells"]["digits-5/tiny/naive/seed0"]
    assert cell["run_dir"] == str(out / "digits-5/tiny/naive/seed0") and cell["config_hash"] == json.loads(
        (out / "digits-5/tiny/naive/seed0/result.json").read_text())["config_hash"]
    submission = manifest["submissions"][0]
    assert submission["cells"] == {"digits-5/tiny/naive/seed0": "skipped: done"} and submission["jobs"] == {}
    assert submission["command"] == (f"cldiff-bench sweep --strategies naive --streams digits-5 --profile tiny "
                                     f"--executor debug --no-progress --out {out} --iterations 1 --no-eval")
    assert "1 done" in capsys.readouterr().err


def test_the_published_produced_by_line_quotes_no_machine_paths_and_adds_up_every_invocation(tmp_path, monkeypatch):
    from cldiff_bench.sweep.command import produced_by
    monkeypatch.chdir(tmp_path)
    command = (f"cldiff-bench sweep --strategies gd,naive --out {tmp_path / 'leaderboard/results'} "
               f"--data-root /somewhere/data --leaderboard leaderboard")
    manifest = {"submissions": [
        {"t": 1000.0, "finished": "1970-01-01T00:36:40+0000", "cells": {"a": "submitted", "b": "submitted"}},
        {"t": 5000.0, "finished": "1970-01-01T01:38:20+0000", "cells": {"a": "skipped: done", "b": "skipped: done"}},
        {"t": 9000.0, "finished": "1970-01-01T03:30:00+0000", "cells": {"a": "skipped: done", "b": "submitted"}}]}
    line = produced_by(command, manifest, 2, 1, "local")
    assert "--out leaderboard/results" in line and "--data-root DATA" in line
    assert str(tmp_path) not in line and "/somewhere" not in line
    # 1,200 s and 3,600 s of the two invocations that ran cells; the one that only skipped does not count
    assert "2 invocations into this sweep directory ran cells, 80 min wall together" in line
