"""Every bad input is one line on stderr, exit status 2, no traceback, and nothing written."""
import gzip
import json
import time

import numpy as np
import pytest
import torch

from cldiff_bench.cli import main
from cldiff_bench.streams.datasets import FMNIST_FILES
from tests.helpers import one_line_error


def files_under(path):
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fmnist_root(tmp_path, damage: str):
    """A data root with well-formed (tiny) Fashion-MNIST files, one of them damaged as `damage` says."""
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in FMNIST_FILES:
        n = 20
        array = np.zeros((n, 28, 28)) if "images" in stem else np.arange(n) % 10
        (raw / f"{stem}.gz").write_bytes(gzip.compress(_idx(array)))
    victim = raw / "train-images-idx3-ubyte.gz"
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:-30])
    elif damage == "not-gzip":
        victim.write_bytes(b"<html>not found</html>")
    elif damage == "short-array":
        victim.write_bytes(gzip.compress(_idx(np.zeros((20, 28, 28)))[:-100]))
    return tmp_path / "data", victim


@pytest.mark.parametrize("damage", ["truncated", "not-gzip", "short-array"])
def test_a_damaged_dataset_file_is_named(tmp_path, capsys, damage):
    root, victim = fmnist_root(tmp_path, damage)
    out = tmp_path / "out"
    code = main(["run", "--strategy", "naive", "--stream", "fmnist-5", "--profile", "tiny", "--data-root",
                 str(root), "--out", str(out), "--no-progress"])
    one_line_error(capsys, code, str(victim))
    assert files_under(out) == []


def test_a_broken_image_in_an_image_folder_is_named(tmp_path, capsys):
    from PIL import Image
    root = tmp_path / "data" / "cifar10"
    for split in ("train", "test"):
        for name in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"):
            folder = root / split / name
            folder.mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(folder / "0.png")
    broken = root / "train" / "cat" / "1.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code = main(["run", "--strategy", "naive", "--stream", "cifar10-5", "--profile", "tiny", "--data-root",
                 str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--no-progress"])
    one_line_error(capsys, code, str(broken))


def test_an_output_path_that_is_a_file_or_below_a_file(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for out, needle in ((blocker, "is a file"), (blocker / "runs", "cannot be created")):
        code = main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--out", str(out),
                     "--no-progress"])
        one_line_error(capsys, code, "--out", needle)
    code = main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--out",
                 str(tmp_path / "out"), "--cache-dir", str(blocker), "--no-progress"])
    one_line_error(capsys, code, "cache directory", "is a file")
    assert blocker.read_text() == "x" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra,needle", [
    (["--learning-rate", "nan"], "finite"),
    (["--epochs", "inf"], "finite"),
    (["--lambda", "nan"], "finite"),
    (["--teacher-eta=-inf"], "finite"),
    (["-o", "lambda", "nan"], "finite"),
    (["-o", "lambda", "-2"], ">= 0"),
    (["-o", "teacher_steps", "1.5"], "whole number"),
    (["-o", "teacher_steps", "two"], "whole number"),
    (["-o", "no_such_option", "1"], "takes no option"),
    (["-o", "lambda", "1", "--lambda", "2"], "given twice"),
    (["--num-generated", "0"], "must be positive"),
    (["--replay-ahead", "0"], ">= 1"),
    (["--threads", "0"], ">= 1"),
])
def test_numeric_options_that_are_nan_inf_or_out_of_range(tmp_path, capsys, extra, needle):
    out = tmp_path / "out"
    code = main(["run", "--strategy", "gd", "--stream", "digits-5", "--profile", "tiny", "--out", str(out),
                 "--no-progress", *extra])
    one_line_error(capsys, code, needle)
    assert files_under(out) == []


def test_a_plugin_option_is_set_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--plugin", "tests.plugins.replay_buffer_plugin", "run", "--strategy", "buffer-replay", "--stream",
            "digits-5", "--profile", "tiny", "--iterations", "2", "--no-eval", "--no-progress", "--out", str(out)]
    assert main([*args, "-o", "buffer_per_task", "3"]) == 0
    result = json.loads((out / "digits-5/tiny/buffer-replay/seed0/result.json").read_text())
    assert result["config"]["strategy_options"] == {"buffer_per_task": 3}
    capsys.readouterr()
    code = main([*args, "--out", str(tmp_path / "bad"), "-o", "buffer_per_task", "0"])
    one_line_error(capsys, code, "buffer_per_task", ">= 1")
    code = main([*args, "--out", str(tmp_path / "bad"), "-o", "buffer_per_task", "many"])
    one_line_error(capsys, code, "buffer_per_task", "whole number")
    assert files_under(tmp_path / "bad") == []


def test_list_shows_a_strategys_options(capsys):
    assert main(["--plugin", "tests.plugins.replay_buffer_plugin", "list", "--strategy", "buffer-replay"]) == 0
    out = capsys.readouterr().out
    assert "buffer_per_task" in out and "images kept per task" in out and "int" in out


def test_a_missing_fid_weights_file_fails_before_any_training_within_seconds(tmp_path, capsys):
    """Preflight: the run checks the extractor's weights before task 0, so a machine that cannot load them loses
    seconds, not a task's training."""
    out = tmp_path / "out"
    started = time.monotonic()
    code = main(["run", "--strategy", "gd", "--stream", "digits-5", "--profile", "tiny", "--out", str(out),
                 "--extractor", "inception", "--inception-weights", str(tmp_path / "missing.pth"), "--no-progress"])
    elapsed = time.monotonic() - started
    one_line_error(capsys, code, "missing.pth", "not found")
    assert elapsed < 10, f"preflight took {elapsed:.1f} s"
    assert not list(out.rglob("losses.csv")) and not list(out.rglob("checkpoint.pt"))


def test_a_device_this_machine_lacks_is_refused_before_any_work(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--out",
                 str(tmp_path / "out"), "--device", "cuda", "--no-progress"])
    one_line_error(capsys, code, "cuda")
    assert not files_under(tmp_path / "out")
