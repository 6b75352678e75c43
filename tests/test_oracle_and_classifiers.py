"""The metrics' floor (`cldiff-bench oracle`) and the evaluation classifiers of the study's paper profile."""
import hashlib
import json

import pytest
import torch

from cldiff_bench.cli import main
from cldiff_bench.evaluation import EvalSettings, Evaluator, networks
from cldiff_bench.evaluation.classifier import train_evaluation_classifier
from cldiff_bench.profiles import evaluation_settings, get_profile
from cldiff_bench.registry import load_registry


def test_oracle_scores_real_held_out_images_far_below_pure_noise(tmp_path, capsys):
    assert main(["oracle", "--stream", "digits-5", "--profile", "tiny", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    path = tmp_path / "digits-5/tiny/real-data/seed0/result.json"
    doc = json.loads(path.read_text())
    assert doc["kind"] == "oracle" and doc["config"]["strategy"] == "real-data"
    assert len(doc["metrics"]["fid"]) == 5 and "accuracy" not in doc["metrics"]

    # Pure noise scored by the same evaluator settings and the same (cached) classifier.
    registry = load_registry()
    spec = registry.stream("digits-5")
    stream = spec.build(None, 0, None)
    settings = EvalSettings(**evaluation_settings(get_profile("tiny"), spec), compute_accuracy=False)
    import os
    evaluator = Evaluator(stream, settings, os.environ["CLDIFF_BENCH_CACHE"], torch.device("cpu"), 0,
                          progress=False, extractors=registry.extractors())
    g = torch.Generator().manual_seed(0)
    for k, task in enumerate(doc["tasks"]):
        noise = torch.randint(0, 256, (settings.num_generated, 1, 32, 32), generator=g, dtype=torch.uint8)
        floor, bad = task["metrics"], evaluator.score_images(k, noise)
        assert floor["fid"] * 5 < bad["fid"]
        assert floor["kld"] < 0.1 and bad["kld"] > 1.0
        assert floor["ard"] < 0.1 and bad["ard"] > 0.5
        assert floor["evaluation_classifier_version"] == bad["evaluation_classifier_version"]


def _fake_imagenet_weights(path):
    """A torchvision resnet18 state dict standing in for the ImageNet file (no download in tests)."""
    from torchvision.models import resnet18
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), path)
    return path


def test_paper_profile_without_its_classifier_stops_before_training_with_one_line(tmp_path, capsys, monkeypatch):
    """The paper profile's ruler is not pinned (100 epochs of a ResNet-18 are a GPU job): a run asks for it to be
    made explicitly, and making it without the ImageNet weights says where they come from."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty hub: nothing cached
    out = tmp_path / "runs"
    code = main(["run", "--strategy", "naive", "--stream", "digits-5", "--profile", "paper", "--device", "cpu",
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "train-evaluator" in err[0] and "resnet18-imagenet" in err[0]
    assert not out.exists()
    code = main(["train-evaluator", "--stream", "digits-5", "--profile", "paper", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--classifier-weights" in err[0] and "resnet18-f37072fd.pth" in err[0]


def test_imagenet_weights_are_checked_against_torchvisions_digest(tmp_path, capsys):
    weights = _fake_imagenet_weights(tmp_path / "resnet18-f37072fd.pth")
    code = main(["train-evaluator", "--stream", "digits-5", "--profile", "paper", "--device", "cpu", "--no-progress",
                 "--classifier-weights", str(weights)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is not torchvision's resnet18-f37072fd.pth" in err[0]


def test_study_classifier_trains_from_given_imagenet_weights_and_names_them(tmp_path, monkeypatch):
    weights = _fake_imagenet_weights(tmp_path / "resnet18.pth")
    # The stand-in passes the digest check of torchvision's file (which tests cannot download).
    monkeypatch.setattr(networks, "IMAGENET_RESNET18_SHA256_PREFIX",
                        hashlib.sha256(weights.read_bytes()).hexdigest()[:8])
    spec = load_registry().stream("digits-5")
    stream = spec.build(None, 0, None)
    settings = EvalSettings(**{**evaluation_settings(get_profile("paper"), spec), "classifier_epochs": 1,
                               "classifier_weights": str(weights)})
    model, info = train_evaluation_classifier(stream, settings, tmp_path / "cache", torch.device("cpu"),
                                              progress=False)
    assert info["arch"] == "resnet18-imagenet" and info["recipe"]["lr"] == 5e-4
    assert info["recipe"]["batch_size"] == 64 and info["best_epoch"] == 1
    assert "-w" in info["version"]  # the weights file's hash is part of the classifier's identity
    # Loaded from the cache the second time: the same network, not a second training.
    again, info2 = train_evaluation_classifier(stream, settings, tmp_path / "cache", torch.device("cpu"),
                                               progress=False)
    assert info2 == info
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_a_weights_file_that_is_not_a_resnet18_is_a_clean_error(tmp_path):
    from cldiff_bench.errors import UserError
    from cldiff_bench.evaluation.networks import imagenet_resnet18_weights
    bad = tmp_path / "x.pth"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(UserError, match="is not torchvision's resnet18-f37072fd.pth"):
        imagenet_resnet18_weights(str(bad))
    with pytest.raises(UserError, match="no such file"):
        imagenet_resnet18_weights(str(tmp_path / "missing.pth"))


@pytest.mark.slow
def test_the_ruler_labels_a_two_class_models_samples_as_those_two_classes():
    """A ruler for generated images, not only real ones: a small diffusion model trained on one task's two digits
    draws them (blurry, speckled, on grey), and the pinned evaluation classifier must put at least 80% of its
    samples in those two classes. A classifier trained on clean images alone put 25% there (it read speckle as 0
    and 8). The model itself differs between processors: its samples scored 93.5% on an AVX-512 machine and 86%
    on an AVX2 one (with the ruler of either), so the bar sits below both and far above the clean-trained 25%."""
    import torch.nn.functional as F

    from cldiff_bench.core import DiffusionCore
    from cldiff_bench.diffusion.seeding import generator
    from cldiff_bench.diffusion.unet import MODEL_PRESETS, model_config
    from cldiff_bench.evaluation.classifier import predict_logits
    from cldiff_bench.streams.base import to_model_range, to_uint8

    spec = load_registry().stream("digits-5")
    stream = spec.build(None, 0, None)
    settings = EvalSettings(**evaluation_settings(get_profile("tiny"), spec))
    import os
    classifier, _ = train_evaluation_classifier(stream, settings, os.environ["CLDIFF_BENCH_CACHE"],
                                                torch.device("cpu"), progress=False)
    core = DiffusionCore(model_config("tiny", MODEL_PRESETS["tiny"], 1), (1, 32, 32), torch.device("cpu"))
    data = stream.tasks[0].train
    optimizer = torch.optim.Adam(core.model.parameters(), lr=2e-3)
    for it in range(1000):
        idx = torch.randint(0, len(data), (32,), generator=generator(0, it, 1))
        x_t, t, noise = core.training_targets(to_model_range(data.images[idx]), generator(0, it, 2))
        loss = F.mse_loss(core.model(x_t, t), noise)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(core.model.parameters(), 1.0)
        optimizer.step()
    samples = to_uint8(core.generate(core.frozen_copy(role="student"), list(range(200)), 10))
    labels = predict_logits(classifier, samples, 200, torch.device("cpu")).argmax(1)
    inside = torch.isin(labels, torch.tensor(stream.tasks[0].classes)).double().mean().item()
    assert inside >= 0.8, torch.bincount(labels, minlength=10).tolist()


@pytest.mark.slow  # two processes, one of which trains a digits classifier
def test_processes_side_by_side_train_the_evaluation_classifier_once(tmp_path):
    """Two processes asked to make the same (new) ruler: one trains it, the other waits for it and loads it."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "cldiff_bench.cli", "train-evaluator", "--stream", "digits-5", "--profile", "tiny",
           "--cache-dir", str(tmp_path), "--no-progress", "--retrain"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [err for _, err in outputs if "cldiff-bench: training the evaluation classifier" in err]
    assert len(trained) == 1, outputs
    weights = sorted((tmp_path / "evaluators").glob("*.pt"))
    assert len(weights) == 1
