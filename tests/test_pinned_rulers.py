"""One ruler for everyone: the evaluation classifiers of the built-in profiles ship with the package, pinned by
sha256; a run never trains one, a damaged file is a one-line error, and a board refuses results of another ruler."""
import json
import shutil

import pytest
import torch

from cldiff_bench.cli import main
from cldiff_bench.errors import UserError
from cldiff_bench.evaluation import pinned_rulers
from cldiff_bench.io import load_tensors
from cldiff_bench.leaderboard import build_tables, load_results

DIGITS_32 = "sklearn-digits-ruler-cnn-e12-h17-s0-c2-r54eeb3-dc2920769df.pt"


def test_every_pinned_ruler_ships_with_its_record_and_digest():
    assert len(pinned_rulers.PINNED) >= 3
    for name, digest in pinned_rulers.PINNED.items():
        path = pinned_rulers.RULERS_DIR / name
        assert pinned_rulers.pinned_file(name) == path
        assert pinned_rulers.file_sha256(path) == digest
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["file"] == name and 0.8 < record["test_accuracy"] <= 1


def test_oracle_scores_with_the_pinned_ruler_and_trains_none(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLDIFF_BENCH_CACHE", str(cache))
    code = main(["oracle", "--stream", "digits-5", "--profile", "tiny", "--out", str(tmp_path / "out"),
                 "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert not (cache / "evaluators").exists()
    [result] = (tmp_path / "out").rglob("result.json")
    ruler = json.loads(result.read_text())["evaluation"]["evaluation_classifier"]
    assert ruler["origin"] == "pinned"
    assert ruler["weights_sha256"] == pinned_rulers.PINNED[DIGITS_32][:16]


@pytest.fixture
def rulers_copy(tmp_path, monkeypatch):
    copy = tmp_path / "rulers"
    shutil.copytree(pinned_rulers.RULERS_DIR, copy)
    monkeypatch.setattr(pinned_rulers, "RULERS_DIR", copy)
    return copy


@pytest.mark.parametrize("damage", ["one byte", "truncated", "missing"])
def test_a_damaged_pinned_ruler_is_a_one_line_error_and_nothing_is_written(rulers_copy, tmp_path, capsys, damage):
    victim = rulers_copy / DIGITS_32
    data = bytearray(victim.read_bytes())
    if damage == "one byte":
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    elif damage == "truncated":
        victim.write_bytes(bytes(data[:-100]))
    else:
        victim.unlink()
    out = tmp_path / "out"
    code = main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--out", str(out),
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert DIGITS_32 in err and pinned_rulers.PINNED[DIGITS_32] in err and "--force-reinstall" in err
    assert not out.exists()


def test_a_setting_without_a_pinned_ruler_is_refused_until_one_is_made(tmp_path):
    from cldiff_bench.evaluation import EvalSettings
    from cldiff_bench.evaluation.classifier import ruler_files
    from cldiff_bench.registry import load_registry
    stream = load_registry().stream("digits-5").build(tmp_path, 0, tmp_path / "cache")
    with pytest.raises(UserError, match="train-evaluator"):
        ruler_files(stream, EvalSettings(classifier_epochs=1), tmp_path / "cache")


def _tiny_run(out, seed, *extra):
    return main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--seed", str(seed),
                 "--iterations", "2", "--num-generated", "32", "--out", str(out), "--no-progress", *extra])


def test_a_board_refuses_a_result_scored_by_a_retrained_ruler_beside_pinned_ones(tmp_path, capsys):
    # A retrained ruler is another network of the same version: here the pinned weights, nudged.
    state = load_tensors(pinned_rulers.RULERS_DIR / DIGITS_32)
    state = {k: v + 1e-3 if v.is_floating_point() else v for k, v in state.items()}
    retrained = tmp_path / "retrained" / DIGITS_32
    retrained.parent.mkdir()
    torch.save(state, retrained)
    shutil.copy(pinned_rulers.RULERS_DIR / DIGITS_32.replace(".pt", ".json"), retrained.with_suffix(".json"))
    out = tmp_path / "out"
    assert _tiny_run(out, 0) == 0
    assert _tiny_run(out, 1, "--ruler", str(retrained)) == 0
    capsys.readouterr()
    results, _ = load_results([out], strict=True)
    digests = {r.doc["evaluation"]["evaluation_classifier"]["weights_sha256"] for r in results}
    assert len(digests) == 2
    with pytest.raises(UserError, match="evaluation classifier"):
        build_tables(results, allow_mixed=False)
