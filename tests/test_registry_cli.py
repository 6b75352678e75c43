import json

import pytest

from cldiff_bench.cli import main
from cldiff_bench.errors import UserError
from cldiff_bench.registry import hookimpl, load_registry

PLUGIN = "tests.plugins.replay_buffer_plugin"


def test_unknown_names_list_the_known_ones_and_suggest():
    registry = load_registry()
    with pytest.raises(UserError) as info:
        registry.strategy("gdd")
    assert "Did you mean 'gd'?" in str(info.value) and "naive" in str(info.value)
    with pytest.raises(UserError, match="fmnist-5"):
        registry.stream("fmnist5")


def test_list_shows_plugin_strategy_with_its_source(capsys):
    assert main(["--plugin", PLUGIN, "list"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("buffer-replay"))
    assert f"--plugin {PLUGIN}" in line
    assert "42.86M" in out and "35.75M" in out  # paper preset sizes


def test_plugin_strategy_runs_end_to_end(tmp_path, capsys):
    code = main(["--plugin", PLUGIN, "run", "--strategy", "buffer-replay", "--stream", "digits-5", "--profile", "tiny",
                 "--iterations", "2", "--no-eval", "--no-progress", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "digits-5/tiny/buffer-replay/seed0/result.json").read_text())
    assert [t["train"]["iterations"] for t in result["tasks"]] == [2] * 5
    assert result["config"]["strategy_options"] == {"buffer_per_task": 8}


def test_two_plugins_with_one_name_are_both_named_and_refused():
    registry = load_registry()

    class First:
        @hookimpl
        def cldiff_bench_strategies(self):
            return [load_registry().strategy("naive")]

    registry.register(First(), "--plugin first_dist")
    with pytest.raises(UserError) as info:
        registry.entries("strategy")
    assert "builtin" in str(info.value) and "first_dist" in str(info.value)


def test_plugin_that_fails_to_import_is_a_clear_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["--plugin", "broken_plugin", "list"]) == 2
    err = capsys.readouterr().err
    assert "broken_plugin" in err and "boom" in err and "Traceback" not in err


@pytest.mark.parametrize("args,needle", [
    (["--strategy", "nope", "--stream", "digits-5"], "unknown strategy"),
    (["--strategy", "naive", "--stream", "nope"], "unknown stream"),
    (["--strategy", "naive", "--stream", "digits-5", "--profile", "huge"], "unknown profile"),
    (["--strategy", "gd", "--stream", "digits-5", "--lambda", "-1"], "must be >= 0"),
    (["--strategy", "naive", "--stream", "digits-5", "--iterations", "0"], "must be positive"),
    (["--strategy", "naive", "--stream", "digits-5", "--batch-size", "-3"], "must be positive"),
    (["--strategy", "naive", "--stream", "fmnist-5", "--data-root", "/nonexistent/data"], "does not exist"),
    (["--strategy", "naive", "--stream", "digits-5", "--device", "cuda"], "no CUDA GPU"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle, capsys, tmp_path):
    if "cuda" in args:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    code = main(["run", *args, "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_real_data_is_a_clear_error(tmp_path, capsys):
    code = main(["run", "--strategy", "joint", "--stream", "fmnist-5", "--profile", "tiny", "--data-root",
                 str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "train-images-idx3-ubyte.gz" in err and "FashionMNIST" in err


def test_installed_plugin_that_fails_to_import_is_reported_with_its_distribution(tmp_path, monkeypatch, capsys):
    """An entry point of another installed distribution that raises on import: named, skipped, the rest works."""
    dist = tmp_path / "broken_plugin_dist-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin-dist\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text("[cldiff_bench]\nbroken = broken_entry_module\n")
    (tmp_path / "broken_entry_module.py").write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry()
    assert any("broken-plugin-dist" in line and "xyz" in line for line in registry.load_errors)
    assert "gd" in registry.entries("strategy")
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert "broken-plugin-dist" in captured.err and "gd " in captured.out
